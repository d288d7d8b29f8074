//! The benchmark's API client: `cluster apiload` (tests/cluster/apiload.go), one long-lived
//! client-go process as the admin, fed one request per line. Thousands of objects, or pods at
//! 20 a second, cost the server's time, not a kubectl start-up each.

use std::{
    io::{BufRead as _, BufReader, Lines, Write as _},
    process::{Child, ChildStdin, ChildStdout, Stdio},
};

use serde_json::{Value, json};

use super::{RealCluster, netns::Netns};

/// A verb the client sends.
#[derive(Clone, Copy, Debug)]
pub enum Verb {
    /// Create the object.
    Create,
    /// Server-side apply it (forced).
    Apply,
    /// Server-side apply its status (forced), as the kubelet writes a pod's.
    ApplyStatus,
    /// Delete it, with no grace period.
    Delete,
}

/// The running client; dropping it closes its input and waits for it.
pub struct ApiLoad {
    child: Child,
    stdin: Option<ChildStdin>,
    responses: Lines<BufReader<ChildStdout>>,
    next: u64,
}

impl ApiLoad {
    /// Starts the client with `workers` requests in flight at most.
    pub fn start(cluster: &RealCluster, workers: usize) -> Self {
        let mut child = Netns::command_in(&cluster.node.name, &cluster.bin)
            .arg("apiload")
            .arg(format!(
                "--kubeconfig={}",
                cluster.pki.kubeconfig_of("admin").display()
            ))
            .arg(format!("--workers={workers}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start cluster apiload");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            stdin,
            responses: BufReader::new(stdout).lines(),
            next: 0,
        }
    }

    /// Sends every request, then waits for all of them; the errors.
    pub fn all(&mut self, verb: Verb, objects: &[Value]) -> Vec<String> {
        let mut errors = Vec::new();
        let mut waiting = 0_usize;
        for object in objects {
            self.send(verb, object);
            waiting += 1;
            // At most this many unanswered, so neither pipe fills up.
            if waiting > 256 {
                errors.extend(self.answer().err());
                waiting -= 1;
            }
        }
        for _ in 0..waiting {
            errors.extend(self.answer().err());
        }
        errors
    }

    /// One request, waited for: the object's UID (empty after a delete), or the error.
    pub fn one(&mut self, verb: Verb, object: &Value) -> Result<String, String> {
        self.send(verb, object);
        self.answer()
    }

    fn send(&mut self, verb: Verb, object: &Value) -> u64 {
        self.next += 1;
        let verb = match verb {
            Verb::Create => "create",
            Verb::Apply => "apply",
            Verb::ApplyStatus => "apply-status",
            Verb::Delete => "delete",
        };
        let line = json!({"id": self.next, "verb": verb, "object": object});
        let stdin = self.stdin.as_mut().expect("the client's input is open");
        writeln!(stdin, "{line}").expect("write to cluster apiload");
        stdin.flush().expect("flush to cluster apiload");
        self.next
    }

    /// The next response: the object's UID, or the error.
    fn answer(&mut self) -> Result<String, String> {
        let line = self
            .responses
            .next()
            .expect("cluster apiload answers every request")
            .expect("read from cluster apiload");
        let response: Value = serde_json::from_str(&line).expect("a JSON response");
        match response["error"].as_str().unwrap_or_default() {
            "" => Ok(response["uid"].as_str().unwrap_or_default().to_owned()),
            error => Err(error.to_owned()),
        }
    }
}

impl Drop for ApiLoad {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
