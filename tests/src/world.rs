//! A standard test world: an attach cgroup with selected and unselected children, a "direct"
//! server standing in for the external destination and a "gateway" server.

use crate::{Agent, Server, TestCgroup};

/// Cgroups and servers for one test. Fields drop in order: children before the root.
#[derive(Debug)]
pub struct World {
    /// Selected for redirection.
    pub selected: TestCgroup,
    /// Not selected.
    pub unselected: TestCgroup,
    /// Where the agent attaches.
    pub root: TestCgroup,
    /// The external destination (answers "direct").
    pub direct: Server,
    /// The egress gateway (answers "gateway").
    pub gateway: Server,
}

impl World {
    /// A new world with servers on 127.0.0.2 (direct) and 127.0.0.3 (gateway).
    pub fn new() -> Self {
        let root = TestCgroup::new("world");
        Self {
            selected: root.child("selected"),
            unselected: root.child("unselected"),
            root,
            direct: Server::start("127.0.0.2", "direct"),
            gateway: Server::start("127.0.0.3", "gateway"),
        }
    }

    /// The `attach:` and `workloads:` lines, plus `extra` YAML (rules etc.).
    pub fn config(&self, rules: &str) -> String {
        format!(
            "attach: {root}\nrules:\n{rules}\nworkloads:\n  cgroups: [{selected}]\n",
            root = self.root.path().display(),
            selected = self.selected.path().display(),
        )
    }

    /// A rule sending TCP and UDP for the direct server to the gateway server.
    pub fn web_rule(&self) -> String {
        format!(
            "  - name: web\n    gateway: 127.0.0.3\n    addresses: [127.0.0.2]\n    ports:\n      - {{port: {p}, gatewayPort: {g}}}\n      - {{port: {p}, gatewayPort: {g}, protocol: UDP}}\n",
            p = self.direct.port(),
            g = self.gateway.port()
        )
    }

    /// Starts an agent on [`World::web_rule`] and waits until it is in force.
    pub fn start_web_agent(&self) -> Agent {
        let agent = Agent::start(&self.config(&self.web_rule()));
        agent.wait_converged(2, 1);
        agent
    }

    /// `127.0.0.2:PORT` of the direct server.
    pub fn direct_addr(&self) -> String {
        self.direct.addr.to_string()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}
