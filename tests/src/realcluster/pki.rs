//! The cluster's certificates and kubeconfigs, made with `openssl`: one CA; the API server's
//! serving certificate for every name a client uses; a client certificate per identity (the
//! admin, the controller manager, kube-proxy, the node); the service-account signing key.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::netns::{NODE_IP, check};

/// The `kubernetes` Service's ClusterIP (the first of the service range).
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// The files under `dir/pki`.
#[derive(Debug)]
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
}

/// A client identity: its file stem, common name and organisation.
pub struct Identity {
    /// File stem.
    pub stem: &'static str,
    /// The user name.
    pub cn: &'static str,
    /// The group, if any.
    pub org: Option<&'static str>,
}

/// The identities the fixture uses.
pub const IDENTITIES: [Identity; 4] = [
    Identity {
        stem: "admin",
        cn: "kubernetes-admin",
        org: Some("system:masters"),
    },
    Identity {
        stem: "controller-manager",
        cn: "system:kube-controller-manager",
        org: None,
    },
    Identity {
        stem: "kube-proxy",
        cn: "system:kube-proxy",
        org: None,
    },
    Identity {
        stem: "node",
        cn: "system:node:node-1",
        org: Some("system:nodes"),
    },
];

impl Pki {
    /// Makes every key and certificate under `dir/pki` and a kubeconfig per identity,
    /// pointing at `server`.
    pub fn create(dir: &Path, server: &str) -> Self {
        let pki = Self {
            dir: dir.join("pki"),
        };
        std::fs::create_dir_all(&pki.dir).expect("mkdir pki");
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=egress-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        pki.openssl(&["genrsa", "-out", "sa.key", "2048"]);
        pki.openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        let sans = format!(
            "subjectAltName=IP:127.0.0.1,IP:{NODE_IP},IP:{KUBERNETES_SERVICE_IP},DNS:localhost,\
             DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,\
             DNS:kubernetes.default.svc.cluster.local"
        );
        pki.sign("apiserver", "/CN=kube-apiserver", "serverAuth", Some(&sans));
        for identity in IDENTITIES {
            let subject = identity.org.map_or_else(
                || format!("/CN={}", identity.cn),
                |org| format!("/O={org}/CN={}", identity.cn),
            );
            pki.sign(identity.stem, &subject, "clientAuth", None);
            pki.kubeconfig(identity.stem, server);
        }
        pki
    }

    /// `dir/pki/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The kubeconfig of `stem` (`admin`, `node`, ...).
    pub fn kubeconfig_of(&self, stem: &str) -> PathBuf {
        self.path(&format!("{stem}.kubeconfig"))
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|err| panic!("openssl: {err}"));
        check(&output, &format!("openssl {}", args.join(" ")));
    }

    /// A key and a certificate signed by the CA.
    fn sign(&self, stem: &str, subject: &str, usage: &str, sans: Option<&str>) {
        let (key, csr, crt) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
        );
        self.openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr,
        ]);
        let ext = format!("{stem}.ext");
        let mut extensions = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
        );
        if let Some(sans) = sans {
            extensions.push_str(sans);
            extensions.push('\n');
        }
        std::fs::write(self.path(&ext), extensions).expect("write extensions");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ]);
    }

    fn kubeconfig(&self, stem: &str, server: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {stem}\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {stem}}}\ncurrent-context: test\n",
            ca = self.path("ca.crt").display(),
            crt = self.path(&format!("{stem}.crt")).display(),
            key = self.path(&format!("{stem}.key")).display(),
        );
        std::fs::write(self.kubeconfig_of(stem), text).expect("write kubeconfig");
    }
}
