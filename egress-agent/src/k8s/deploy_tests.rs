//! What no API server can check in `deploy/`: how its documents fit together. A server
//! validates one object at a time, so it accepts a probe or a `PodMonitor` naming a port no
//! container declares, a binding whose parameter is missing, or an agent that reads its trusted
//! namespaces from somewhere else than the admission policy does.
//!
//! Schemas, the CRD's CEL rules and the admission policy are the API server's: the `cluster`
//! suite (`tests/tests/cluster`) applies these files to a real kube-apiserver. Here: the loader
//! and the `Kustomization`; the workloads' ports (`deploy_workloads_tests.rs`), the trusted
//! namespaces and admission binding (`deploy_tenancy_tests.rs`) and the `PrometheusRule`
//! (`deploy_rules_tests.rs`).

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use serde::Deserialize as _;
use serde_json::{Value, json};

/// Where the manifests are.
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
/// The agent's `DaemonSet` (in the tenancy namespace) and its container.
const AGENT: (&str, &str) = ("egress-agent", "agent");

/// One YAML document and the file it came from.
#[derive(Debug, Clone)]
struct Document {
    /// The file, relative to `deploy/` (or a test's name for a document it built).
    file: String,
    value: Value,
}

impl Document {
    fn kind(&self) -> &str {
        text(&self.value["kind"])
    }

    fn name(&self) -> &str {
        text(&self.value["metadata"]["name"])
    }

    fn namespace(&self) -> &str {
        text(&self.value["metadata"]["namespace"])
    }

    /// `deploy/file: Kind namespace/name`, for messages.
    fn describe(&self) -> String {
        let namespace = self.namespace();
        let slash = if namespace.is_empty() { "" } else { "/" };
        format!(
            "deploy/{}: {} {namespace}{slash}{}",
            self.file,
            self.kind(),
            self.name()
        )
    }
}

/// A string field, or "" when it is missing or not a string.
fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// The items of a list field (none when it is missing).
fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// Every document of `yaml` (a file's text), empty ones left out.
fn parse(file: &str, yaml: &str) -> Vec<Document> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|err| panic!("deploy/{file} is not YAML: {err}"))
        })
        .filter(|value| !value.is_null())
        .map(|value| Document {
            file: file.to_owned(),
            value,
        })
        .collect()
}

/// Every document under `deploy/`, in the order of their files' paths.
fn deploy() -> &'static [Document] {
    static DOCUMENTS: OnceLock<Vec<Document>> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        let root = Path::new(DEPLOY);
        let mut files: Vec<PathBuf> = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()));
            for entry in entries {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path
                    .extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
                {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
            .iter()
            .flat_map(|path| {
                let file = path.strip_prefix(root).expect("under deploy/");
                let yaml = std::fs::read_to_string(path)
                    .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
                parse(&file.to_string_lossy(), &yaml)
            })
            .collect()
    })
}

/// The documents of one kind.
fn of_kind<'a>(docs: &'a [Document], kind: &'a str) -> impl Iterator<Item = &'a Document> {
    docs.iter().filter(move |doc| doc.kind() == kind)
}

/// The document of this kind, name and (when given) namespace.
fn find<'a>(
    docs: &'a [Document],
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Option<&'a Document> {
    docs.iter().find(|doc| {
        doc.kind() == kind && doc.name() == name && namespace.is_none_or(|ns| doc.namespace() == ns)
    })
}

/// Fails naming every problem.
fn assert_none(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// Asserts that `problems` has one that contains each of `needles`.
fn assert_reported(problems: &[String], needles: &[&str]) {
    assert!(
        problems
            .iter()
            .any(|problem| needles.iter().all(|needle| problem.contains(needle))),
        "no problem mentions {needles:?}; reported: {problems:#?}"
    );
}

/// `deploy/` with one document changed by `edit`, for the tests that make a check fail.
fn edited(kind: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Vec<Document> {
    let mut docs = deploy().to_vec();
    let doc = docs
        .iter_mut()
        .find(|doc| doc.kind() == kind && doc.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} under deploy/"));
    edit(&mut doc.value);
    docs
}

/// Every `DaemonSet` and `Deployment`, with its pod template.
fn workloads(docs: &[Document]) -> impl Iterator<Item = (&Document, &Value)> {
    docs.iter()
        .filter(|doc| matches!(doc.kind(), "DaemonSet" | "Deployment"))
        .map(|doc| (doc, &doc.value["spec"]["template"]))
}

/// A pod template's containers, init containers included.
fn containers(template: &Value) -> impl Iterator<Item = &Value> {
    items(&template["spec"]["initContainers"]).chain(items(&template["spec"]["containers"]))
}

// --- the checks ----------------------------------------------------------------------------------

/// A `Kustomization`'s resources exist, relative to its directory.
fn kustomization_problems(docs: &[Document], root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for doc in of_kind(docs, "Kustomization") {
        let dir = root.join(&doc.file);
        let dir = dir.parent().unwrap_or(root);
        for resource in items(&doc.value["resources"]).map(text) {
            if !dir.join(resource).exists() {
                problems.push(format!(
                    "{}: resources: {resource} does not exist",
                    doc.describe()
                ));
            }
        }
    }
    problems
}

// --- deploy/ as checked in -----------------------------------------------------------------------

#[test]
fn every_document_has_a_kind_and_a_name() {
    let docs = deploy();
    assert!(
        docs.len() >= 20,
        "only {} documents under deploy/",
        docs.len()
    );
    let problems: Vec<String> = docs
        .iter()
        .filter(|doc| {
            doc.value["apiVersion"].as_str().is_none()
                || doc.kind().is_empty()
                || doc.name().is_empty()
        })
        .map(|doc| {
            format!(
                "{}: apiVersion, kind or metadata.name missing",
                doc.describe()
            )
        })
        .collect();
    assert_none("documents under deploy/", &problems);
}

#[test]
fn the_kustomization_lists_files_that_exist() {
    assert_eq!(of_kind(deploy(), "Kustomization").count(), 1);
    assert_none(
        "deploy/kustomization.yaml",
        &kustomization_problems(deploy(), Path::new(DEPLOY)),
    );
}

// --- each check fails when it should -------------------------------------------------------------

#[test]
fn a_missing_kustomization_resource_is_reported() {
    let docs = edited("Kustomization", "egress-agent", |k| {
        k["resources"][1] = json!("namespaces.yaml");
    });
    assert_reported(
        &kustomization_problems(&docs, Path::new(DEPLOY)),
        &["kustomization.yaml", "namespaces.yaml does not exist"],
    );
}

#[path = "deploy_workloads_tests.rs"]
mod workloads;

#[path = "deploy_tenancy_tests.rs"]
mod tenancy;

#[path = "deploy_rules_tests.rs"]
mod rules;
