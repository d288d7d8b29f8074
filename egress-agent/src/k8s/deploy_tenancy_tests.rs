//! One list of trusted namespaces for the agent and the admission policy, and the admission
//! binding's policy and parameter under `deploy/`: the API server takes each document alone.

use serde_json::{Value, json};

use super::{
    AGENT, Document, assert_none, assert_reported, containers, deploy, edited, find, items,
    of_kind, text,
};

/// The `ConfigMap` that lists the trusted namespaces: (namespace, name). The admission policy
/// and its binding have its name too.
const TENANCY: (&str, &str) = ("egress-agent-system", "egress-agent-tenancy");
/// Its key.
const TENANCY_KEY: &str = "trustedNamespaces";

/// A `ValidatingAdmissionPolicyBinding`'s policy, and its parameter object, are under
/// `deploy/` (a binding to a missing policy does nothing; a missing parameter denies).
fn binding_problems(docs: &[Document]) -> Vec<String> {
    let mut problems = Vec::new();
    for binding in of_kind(docs, "ValidatingAdmissionPolicyBinding") {
        let spec = &binding.value["spec"];
        let policy_name = text(&spec["policyName"]);
        let Some(policy) = find(docs, "ValidatingAdmissionPolicy", policy_name, None) else {
            problems.push(format!(
                "{}: spec.policyName {policy_name:?}: no such ValidatingAdmissionPolicy under deploy/",
                binding.describe()
            ));
            continue;
        };
        let param_ref = &spec["paramRef"];
        if param_ref.is_null() {
            continue;
        }
        let kind = text(&policy.value["spec"]["paramKind"]["kind"]);
        let (namespace, name) = (text(&param_ref["namespace"]), text(&param_ref["name"]));
        if name.is_empty() {
            problems.push(format!(
                "{}: spec.paramRef has no name (a selector is not evaluated by this test)",
                binding.describe()
            ));
        } else if find(docs, kind, name, Some(namespace)).is_none() {
            problems.push(format!(
                "{}: spec.paramRef {namespace}/{name}: no {kind:?} of that name under deploy/ (the policy's paramKind)",
                binding.describe()
            ));
        }
    }
    problems
}

/// The `run` option that lists the trusted namespaces: its flag and environment variable, from
/// the agent's own command line.
fn trusted_namespaces_option() -> (String, String) {
    use clap::CommandFactory as _;
    let command = crate::cli::Cli::command();
    let run = command.find_subcommand("run").expect("a run subcommand");
    let arg = run
        .get_arguments()
        .find(|arg| arg.get_id() == "trusted_namespaces")
        .expect("run has trusted_namespaces");
    (
        format!("--{}", arg.get_long().expect("a long flag")),
        arg.get_env()
            .expect("an environment variable")
            .to_string_lossy()
            .into_owned(),
    )
}

/// One list of trusted namespaces, for the agent and the admission policy alike: the tenancy
/// `ConfigMap` has the key, the agent's container takes its variable from that key (and no flag
/// adds to it), and the admission policy's binding passes that `ConfigMap`, whose key the
/// policy reads.
fn tenancy_problems(docs: &[Document]) -> Vec<String> {
    let (namespace, name) = TENANCY;
    let Some(tenancy) = find(docs, "ConfigMap", name, Some(namespace)) else {
        return vec![format!(
            "ConfigMap {namespace}/{name}: missing from deploy/"
        )];
    };
    let mut problems = Vec::new();
    if tenancy.value["data"][TENANCY_KEY].as_str().is_none() {
        problems.push(format!(
            "{}: data.{TENANCY_KEY}: missing",
            tenancy.describe()
        ));
    }
    let (flag, variable) = trusted_namespaces_option();
    let agent = find(docs, "DaemonSet", AGENT.0, Some(namespace)).and_then(|ds| {
        containers(&ds.value["spec"]["template"])
            .find(|c| text(&c["name"]) == AGENT.1)
            .map(|container| (ds, container))
    });
    match agent {
        None => problems.push(format!(
            "DaemonSet {namespace}/{} with a container {}: missing from deploy/",
            AGENT.0, AGENT.1
        )),
        Some((ds, container)) => {
            if items(&container["args"])
                .map(text)
                .any(|arg| arg.starts_with(&flag))
            {
                problems.push(format!(
                    "{}: {flag}: take the list from {} through {variable}",
                    ds.describe(),
                    tenancy.describe()
                ));
            }
            let source = items(&container["env"])
                .find(|env| text(&env["name"]) == variable)
                .map(|env| &env["valueFrom"]["configMapKeyRef"]);
            if !source.is_some_and(|from| from["name"] == name && from["key"] == TENANCY_KEY) {
                problems.push(format!(
                    "{}: env {variable} must come from ConfigMap {name} key {TENANCY_KEY}, not {}",
                    ds.describe(),
                    source.unwrap_or(&Value::Null)
                ));
            }
        }
    }
    let passed = of_kind(docs, "ValidatingAdmissionPolicyBinding").any(|binding| {
        text(&binding.value["spec"]["policyName"]) == name
            && binding.value["spec"]["paramRef"]["namespace"] == namespace
            && binding.value["spec"]["paramRef"]["name"] == name
    });
    if !passed {
        problems.push(format!(
            "no ValidatingAdmissionPolicyBinding passes {} to the policy {name}",
            tenancy.describe()
        ));
    }
    let read = find(docs, "ValidatingAdmissionPolicy", name, None).is_some_and(|policy| {
        items(&policy.value["spec"]["variables"])
            .any(|v| text(&v["expression"]).contains(&format!("params.data.{TENANCY_KEY}")))
    });
    if !read {
        problems.push(format!(
            "ValidatingAdmissionPolicy {name}: no variable reads params.data.{TENANCY_KEY}"
        ));
    }
    problems
}

// --- deploy/ as checked in -----------------------------------------------------------------------

#[test]
fn admission_bindings_have_their_policy_and_parameter() {
    assert_none(
        "admission bindings under deploy/",
        &binding_problems(deploy()),
    );
}

#[test]
fn the_agent_and_the_admission_policy_read_one_trusted_list() {
    assert_none("trusted namespaces", &tenancy_problems(deploy()));
}

// --- each check fails when it should -------------------------------------------------------------

#[test]
fn a_binding_without_its_policy_or_parameter_is_reported() {
    let docs = edited("ValidatingAdmissionPolicyBinding", TENANCY.1, |b| {
        b["spec"]["policyName"] = json!("egress-agent-tenants");
    });
    assert_reported(
        &binding_problems(&docs),
        &[
            "admission.yaml",
            "\"egress-agent-tenants\": no such ValidatingAdmissionPolicy",
        ],
    );
    let docs = edited("ValidatingAdmissionPolicyBinding", TENANCY.1, |b| {
        b["spec"]["paramRef"]["namespace"] = json!("default");
    });
    assert_reported(
        &binding_problems(&docs),
        &["paramRef default/egress-agent-tenancy: no \"ConfigMap\""],
    );
}

#[test]
fn a_second_source_of_trusted_namespaces_is_reported() {
    let docs = edited("DaemonSet", AGENT.0, |ds| {
        let agent = &mut ds["spec"]["template"]["spec"]["containers"][0];
        let args = agent["args"].as_array_mut().expect("args");
        args.push(json!("--trusted-namespace=apps"));
    });
    assert_reported(
        &tenancy_problems(&docs),
        &["daemonset.yaml", "--trusted-namespace: take the list from"],
    );
    let docs = edited("DaemonSet", AGENT.0, |ds| {
        let agent = &mut ds["spec"]["template"]["spec"]["containers"][0];
        for env in agent["env"].as_array_mut().expect("env") {
            if env["name"] == "EGRESS_TRUSTED_NAMESPACES" {
                env["valueFrom"]["configMapKeyRef"]["key"] = json!("trusted");
            }
        }
    });
    assert_reported(
        &tenancy_problems(&docs),
        &[
            "env EGRESS_TRUSTED_NAMESPACES must come from ConfigMap egress-agent-tenancy key trustedNamespaces",
        ],
    );
    let docs = edited("ConfigMap", TENANCY.1, |cm| {
        cm["data"] = json!({"trusted": "gateway-system"});
    });
    assert_reported(
        &tenancy_problems(&docs),
        &["data.trustedNamespaces: missing"],
    );
    let docs = edited("ValidatingAdmissionPolicy", TENANCY.1, |policy| {
        for variable in policy["spec"]["variables"]
            .as_array_mut()
            .expect("variables")
        {
            let renamed = text(&variable["expression"])
                .replace("params.data.trustedNamespaces", "params.data.trusted");
            variable["expression"] = json!(renamed);
        }
    });
    assert_reported(
        &tenancy_problems(&docs),
        &["no variable reads params.data.trustedNamespaces"],
    );
}
