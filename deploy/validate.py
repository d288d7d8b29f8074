#!/usr/bin/env python3
"""Validates every YAML document under deploy/, offline.

* Built-in kinds: kubernetes-validate (strict: unknown fields are errors) against the
  Kubernetes version below, plus the selector/template label check the schema cannot express.
* EgressRedirectPolicy: the openAPIV3Schema in deploy/crd.yaml with jsonschema (unknown fields
  rejected, as `kubectl apply` does by default), and the CEL rule on targetRef by hand.
* Gateway API, Istio and Kustomization documents: no schema offline, so only apiVersion, kind
  and metadata.name are checked (and a Kustomization's resources must exist).

Self-tests first check that a bad policy and a built-in object with an unknown field are
rejected. Needs `pip install kubernetes-validate` (it brings jsonschema and PyYAML).

Usage: python3 deploy/validate.py    (exit status 0 when everything passes)
"""

import copy
import importlib.metadata
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils
from packaging.version import Version

WANTED_K8S = "1.33"
OLDEST_K8S = "1.30"

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent

BUILTIN_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "DaemonSet",
    "Deployment",
    "CustomResourceDefinition",
}
STRUCTURAL_KINDS = {
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "HTTPRoute"),
    ("networking.istio.io", "ServiceEntry"),
    ("networking.istio.io", "Gateway"),
    ("networking.istio.io", "VirtualService"),
    ("kustomize.config.k8s.io", "Kustomization"),
}
POLICY_KIND = "EgressRedirectPolicy"
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def k8s_version():
    """WANTED_K8S if the installed kubernetes-validate has it, else its newest >= OLDEST_K8S."""
    available = sorted({kv_utils.major_minor(v) for v in kv_utils.all_versions()}, key=Version)
    if WANTED_K8S in available:
        return WANTED_K8S
    newer = [v for v in available if Version(v) >= Version(OLDEST_K8S)]
    if not newer:
        sys.exit(f"kubernetes-validate {kubernetes_validate.__version__} has no schema "
                 f">= {OLDEST_K8S} (has {', '.join(available)})")
    return newer[-1]


def group_of(doc):
    api_version = doc.get("apiVersion", "")
    return api_version.split("/")[0] if "/" in api_version else ""


def describe(doc):
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{doc.get('kind', '?')}/{name}"


# --- EgressRedirectPolicy -------------------------------------------------------------------

def to_jsonschema(node):
    """An OpenAPI v3 structural schema as JSON Schema: `nullable` becomes a null type, and
    objects with properties reject unknown fields (the API server's strict field validation)."""
    if isinstance(node, list):
        return [to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: to_jsonschema(value) for key, value in node.items()
           if not key.startswith("x-kubernetes-") and key != "nullable"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = out["enum"] + [None]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_policy_validator():
    crd = yaml.safe_load((DEPLOY / "crd.yaml").read_text())
    spec = crd["spec"]
    if spec["names"]["kind"] != POLICY_KIND:
        sys.exit(f"deploy/crd.yaml defines {spec['names']['kind']}, not {POLICY_KIND}")
    versions = {f"{spec['group']}/{v['name']}": v for v in spec["versions"] if v.get("served")}
    schemas = {}
    for api_version, version in versions.items():
        schema = to_jsonschema(version["schema"]["openAPIV3Schema"])
        # The API server supplies these for every custom resource.
        schema["properties"].update({
            "apiVersion": {"type": "string", "const": api_version},
            "kind": {"type": "string", "const": POLICY_KIND},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "maxLength": 253,
                             "pattern": DNS_SUBDOMAIN.pattern},
                    "namespace": {"type": "string"},
                },
            },
        })
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind",
                                                                      "metadata"})
        jsonschema.Draft202012Validator.check_schema(schema)
        schemas[api_version] = jsonschema.Draft202012Validator(schema)
    return schemas


def target_ref_rule(target_ref):
    """The CRD's x-kubernetes-validations rule on spec.targetRef (group defaults to "")."""
    kind = target_ref.get("kind")
    group = target_ref.get("group", "")
    if (kind == "Gateway" and group == "gateway.networking.k8s.io") or (
            kind == "Service" and group == ""):
        return []
    return [f"spec.targetRef: targetRef must be a Gateway (group gateway.networking.k8s.io) "
            f"or a Service (group \"\"), got kind {kind!r} group {group!r}"]


def policy_errors(doc, validators):
    validator = validators.get(doc.get("apiVersion"))
    if validator is None:
        return [f"apiVersion {doc.get('apiVersion')!r} is not served by deploy/crd.yaml "
                f"(served: {', '.join(validators)})"]
    errors = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        path = ".".join(str(p) for p in error.path) or "<root>"
        errors.append(f"{path}: {error.message}")
    target_ref = (doc.get("spec") or {}).get("targetRef")
    if isinstance(target_ref, dict):
        errors += target_ref_rule(target_ref)
    if not (doc.get("metadata") or {}).get("namespace"):
        errors.append("metadata.namespace: EgressRedirectPolicy is namespaced; set it")
    return errors


# --- built-in kinds -------------------------------------------------------------------------

def builtin_errors(doc, version):
    errors = []
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:  # the first error only
        path = ".".join(str(p) for p in error.path) or "<root>"
        errors.append(f"{path}: {error.message}")
    except kv_utils.SchemaNotFoundError as error:
        return [error.message]
    # The API server rejects a workload whose selector does not match its pod template.
    if doc.get("kind") in ("DaemonSet", "Deployment"):
        spec = doc.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        for key, value in selector.items():
            if labels.get(key) != value:
                errors.append(f"spec.selector.matchLabels.{key}={value} is not a label of "
                              "spec.template")
        # The schema takes any string as a quantity; the API server does not.
        pod = (spec.get("template") or {}).get("spec") or {}
        for field in ("initContainers", "containers"):
            for i, container in enumerate(pod.get(field) or []):
                resources = container.get("resources") or {}
                for section in ("requests", "limits"):
                    for name, quantity in (resources.get(section) or {}).items():
                        if not QUANTITY.match(str(quantity)):
                            errors.append(f"spec.template.spec.{field}.{i}.resources.{section}."
                                          f"{name}: {quantity!r} is not a quantity")
    return errors


# --- kinds without a schema -----------------------------------------------------------------

def structural_errors(doc, path):
    errors = [f"{field}: missing" for field, value in (
        ("apiVersion", doc.get("apiVersion")),
        ("kind", doc.get("kind")),
        ("metadata.name", (doc.get("metadata") or {}).get("name")),
    ) if not value]
    if doc.get("kind") == "Kustomization":
        for resource in doc.get("resources") or []:
            if not (path.parent / resource).exists():
                errors.append(f"resources: {resource} does not exist")
    return errors


def check(doc, path, version, validators):
    """(errors, note) for one document."""
    kind = doc.get("kind")
    if kind in BUILTIN_KINDS and group_of(doc) in ("", "apps", "rbac.authorization.k8s.io",
                                                   "apiextensions.k8s.io"):
        return builtin_errors(doc, version), f"(Kubernetes {version} schema, strict)"
    if kind == POLICY_KIND:
        return policy_errors(doc, validators), "(deploy/crd.yaml schema + CEL)"
    if (group_of(doc), kind) in STRUCTURAL_KINDS:
        return structural_errors(doc, path), "(checked structurally only: no schema offline)"
    return [f"no validation known for {doc.get('apiVersion')} {kind}"], ""


# --- self-tests -----------------------------------------------------------------------------

BAD_POLICY = {
    "apiVersion": "egress-agent.io/v1alpha1",
    "kind": POLICY_KIND,
    "metadata": {"name": "bad", "namespace": "default"},
    "spec": {
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Service", "name": "gw"},
        "ports": [{"port": 70000}],
    },
}
GOOD_POLICY = {
    "apiVersion": "egress-agent.io/v1alpha1",
    "kind": POLICY_KIND,
    "metadata": {"name": "good", "namespace": "default"},
    "spec": {
        "targetRef": {"kind": "Service", "name": "gw"},
        "hostnames": ["example.com", "*.example.org"],
        "ports": [{"port": 443, "gatewayPort": None, "protocol": "TCP"}],
        "workloadSelector": None,
    },
}
BAD_SERVICE_ACCOUNT = {
    "apiVersion": "v1",
    "kind": "ServiceAccount",
    "metadata": {"name": "bad", "namespace": "default"},
    "spec": {},
}


def self_tests(version, validators):
    """Each returns a failure message, or None."""
    failures = []
    errors = policy_errors(BAD_POLICY, validators)
    if not any("ports.0.port" in e for e in errors):
        failures.append("self-test: port 70000 was accepted")
    if not any(e.startswith("spec.targetRef:") and "targetRef must be" in e for e in errors):
        failures.append("self-test: targetRef kind Service with a Gateway API group was accepted")
    errors = policy_errors(GOOD_POLICY, validators)
    if errors:
        failures.append(f"self-test: a valid policy was rejected: {errors}")
    bad_ref = copy.deepcopy(GOOD_POLICY)
    bad_ref["spec"]["targetRef"] = {"kind": "Gateway", "name": "gw"}  # group defaults to ""
    if not target_ref_rule(bad_ref["spec"]["targetRef"]):
        failures.append("self-test: a Gateway targetRef without its group was accepted")
    if not builtin_errors(BAD_SERVICE_ACCOUNT, version):
        failures.append("self-test: an unknown field on a ServiceAccount was accepted "
                        "(strict mode off?)")
    return failures


def main():
    version = k8s_version()
    validators = load_policy_validator()
    print(f"kubernetes-validate {kubernetes_validate.__version__}, Kubernetes {version} "
          f"schemas (strict); jsonschema {importlib.metadata.version('jsonschema')}")

    failed = False
    failures = self_tests(version, validators)
    for failure in failures:
        print(f"FAIL  {failure}")
    failed |= bool(failures)
    if not failures:
        print("ok  self-test: bad policy (Service with a Gateway API group, port 70000) and "
              "strict unknown-field check rejected")

    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))
    for path in files:
        shown = path.relative_to(ROOT)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as error:
            print(f"FAIL  {shown}  YAML: {error}")
            failed = True
            continue
        if not docs:
            print(f"FAIL  {shown}  no YAML documents")
            failed = True
        for doc in docs:
            if not isinstance(doc, dict):
                print(f"FAIL  {shown}  not a mapping: {doc!r:.60}")
                failed = True
                continue
            errors, note = check(doc, path, version, validators)
            if errors:
                failed = True
                for error in errors:
                    print(f"FAIL  {shown}  {describe(doc)}: {error}")
            else:
                print(f"ok  {shown}  {describe(doc)}  {note}")

    print("FAILED" if failed else "all documents valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
