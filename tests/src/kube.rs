//! The test API server (`fake_apiserver.py`, speaking the real list/watch protocol) and a
//! kubeconfig pointing at it.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A running test API server.
#[derive(Debug)]
pub struct FakeApi {
    child: Child,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl FakeApi {
    /// Starts the server and writes a kubeconfig for it.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(crate::unique("kube"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        let port_file = dir.join("port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fake_apiserver.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("start {script}: {err}"));
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(10));
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                break port;
            }
            assert!(Instant::now() < deadline, "fake API server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\ncurrent-context: fake\n"
        );
        std::fs::write(dir.join("kubeconfig"), kubeconfig)
            .unwrap_or_else(|err| panic!("kubeconfig: {err}"));
        Self { child, dir, port }
    }

    /// The kubeconfig file.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    fn request(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|err| panic!("fake API: {err}"));
        write!(stream, "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .unwrap_or_else(|err| panic!("fake API write: {err}"));
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|err| panic!("fake API read: {err}"));
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// Creates or replaces an object.
    pub fn apply(&self, object: &Value) {
        self.request("POST", "/__apply", object);
    }

    /// Deletes an object (apiVersion, kind, metadata.namespace/name).
    pub fn delete(&self, object: &Value) {
        self.request("POST", "/__delete", object);
    }

    /// The Events posted so far.
    pub fn events(&self) -> Vec<Value> {
        self.request("GET", "/__events", &Value::Null)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// One stored object.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Value {
        self.request(
            "GET",
            &format!("/__get?path={collection}&ns={namespace}&name={name}"),
            &Value::Null,
        )
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl FakeApi {
    /// Moves the compaction point to now: older watch positions get 410 Gone.
    pub fn compact(&self) {
        self.request("POST", "/__compact", &Value::Null);
    }

    /// Closes every open watch; with `gone`, each first gets a 410 (forcing a relist).
    pub fn expire_watches(&self, gone: bool) {
        self.request(
            "POST",
            "/__expire_watches",
            &serde_json::json!({ "gone": gone }),
        );
    }

    /// Makes an API group vanish from discovery (and its paths 404).
    pub fn disable_group(&self, group: &str) {
        self.request(
            "POST",
            "/__disable_group",
            &serde_json::json!({ "group": group }),
        );
    }

    /// The next `count` requests under `path_prefix` fail with `code`.
    pub fn fail(&self, path_prefix: &str, code: u16, count: u32) {
        self.request(
            "POST",
            "/__fail",
            &serde_json::json!({"path_prefix": path_prefix, "code": code, "count": count}),
        );
    }

    /// Every API request served so far: `{"method", "path", "query"}`.
    pub fn requests(&self) -> Vec<Value> {
        self.request("GET", "/__requests", &Value::Null)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Clears the request record.
    pub fn reset_requests(&self) {
        self.request("POST", "/__reset_requests", &Value::Null);
    }
}

impl FakeApi {
    /// Creates or replaces many objects in one request.
    pub fn apply_many(&self, objects: &[Value]) {
        self.request("POST", "/__apply_many", &Value::Array(objects.to_vec()));
    }
}
