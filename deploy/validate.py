#!/usr/bin/env python3
"""Validates every YAML document under deploy/, offline.

* Built-in kinds: kubernetes-validate (strict: unknown fields are errors) against the
  Kubernetes version below, plus the selector/template label check the schema cannot express.
* EgressRedirectPolicy: the openAPIV3Schema in deploy/crd.yaml with jsonschema (unknown fields
  rejected, as `kubectl apply` does by default), and the CEL rule on targetRef by hand.
* ValidatingAdmissionPolicy: its schema as a built-in kind, every CEL expression compiled with
  cel-python, and each EgressRedirectPolicy under deploy/ must pass it (evaluated with the
  tenancy ConfigMap as its parameter).
* Gateway API, Istio, Prometheus operator and Kustomization documents: no schema offline, so
  only apiVersion, kind and metadata.name are checked (and a Kustomization's resources must
  exist; a PrometheusRule's rules need an expr and may use only the agent's metric names).
* Across documents: the PodMonitor selects the DaemonSet's pods and names one of its ports,
  probes name declared ports, the admission binding's policy and parameter exist, and the
  DaemonSet's EGRESS_TRUSTED_NAMESPACES comes from the tenancy ConfigMap.

Self-tests first check that a bad policy and a built-in object with an unknown field are
rejected, and evaluate the admission policy's CEL (cel-python, with `object`,
`namespaceObject` and `params` bound) against policies with and without
spec.namespaceSelector in trusted and untrusted namespaces. Needs
`pip install kubernetes-validate cel-python` (they bring jsonschema, PyYAML and lark).

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

try:
    import celpy
except ImportError:
    sys.exit("deploy/validate.py needs cel-python to test the admission policy: "
             "python3 -m pip install cel-python")
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
    "ConfigMap",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
BUILTIN_GROUPS = {"", "apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io",
                  "admissionregistration.k8s.io"}
STRUCTURAL_KINDS = {
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "HTTPRoute"),
    ("networking.istio.io", "ServiceEntry"),
    ("networking.istio.io", "Gateway"),
    ("networking.istio.io", "VirtualService"),
    ("kustomize.config.k8s.io", "Kustomization"),
    ("monitoring.coreos.com", "PodMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"),
}
POLICY_KIND = "EgressRedirectPolicy"
POLICY_GROUP = "egress-agent.io"
# What the agent exports (prometheus-client, OpenMetrics). Histograms also have _bucket, _sum,
# _count (and _created, like counters).
METRICS = {
    "egress_agent_unselected_connections_total",
    "egress_agent_refused_total",
    "egress_agent_redirected_total",
    "egress_agent_family_mismatch_total",
    "egress_agent_routes",
    "egress_agent_map_fill_ratio",
    "egress_agent_dns_queries_total",
    "egress_agent_dns_answers_learned_total",
    "egress_agent_dns_answers_unparsed_total",
    "egress_agent_reconcile_errors_total",
    "egress_agent_watch_restarts_total",
    "egress_agent_pod_cgroups_missing",
}
HISTOGRAMS = {
    "egress_agent_dns_query_duration_seconds",
    "egress_agent_reconcile_duration_seconds",
}
METRIC_NAME = re.compile(r"\begress_agent_[a-zA-Z0-9_]*")
PROM_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
TENANCY_CONFIGMAP = ("egress-agent-system", "egress-agent-tenancy")
TENANCY_KEY = "trustedNamespaces"
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


# --- ValidatingAdmissionPolicy: CEL with cel-python ------------------------------------------

class AdmissionError(Exception):
    """An expression could not be evaluated: the policy's failurePolicy decides."""


_PROGRAMS = {}


def cel_program(expression):
    """The compiled expression (cached). Raises celpy.CELParseError."""
    if expression not in _PROGRAMS:
        env = celpy.Environment()
        _PROGRAMS[expression] = env.program(env.compile(expression))
    return _PROGRAMS[expression]


def vap_expressions(doc):
    """(field path, CEL expression) of every expression in a ValidatingAdmissionPolicy."""
    spec = doc.get("spec") or {}
    for i, condition in enumerate(spec.get("matchConditions") or []):
        yield f"spec.matchConditions.{i}.expression", condition.get("expression", "")
    for i, variable in enumerate(spec.get("variables") or []):
        yield f"spec.variables.{i}.expression", variable.get("expression", "")
    for i, validation in enumerate(spec.get("validations") or []):
        yield f"spec.validations.{i}.expression", validation.get("expression", "")
        if "messageExpression" in validation:
            yield f"spec.validations.{i}.messageExpression", validation["messageExpression"]
    for i, annotation in enumerate(spec.get("auditAnnotations") or []):
        yield f"spec.auditAnnotations.{i}.valueExpression", annotation.get("valueExpression", "")


def vap_errors(doc):
    """Every expression compiles, and uses only variables defined before it."""
    errors = []
    for path, expression in vap_expressions(doc):
        try:
            cel_program(expression)
        except celpy.CELParseError as error:
            errors.append(f"{path}: CEL does not compile: {error}")
    spec = doc.get("spec") or {}
    defined = set()
    for i, variable in enumerate(spec.get("variables") or []):
        for name in re.findall(r"\bvariables\.(\w+)", variable.get("expression", "")):
            if name not in defined:
                errors.append(f"spec.variables.{i}.expression: variables.{name} is not defined "
                              "before it")
        defined.add(variable.get("name"))
    for path, expression in vap_expressions(doc):
        if path.startswith("spec.variables."):
            continue
        for name in re.findall(r"\bvariables\.(\w+)", expression):
            if name not in defined:
                errors.append(f"{path}: variables.{name} is not defined")
    return errors


def vap_matches(doc, obj):
    """Whether the policy's matchConstraints.resourceRules cover creating `obj`."""
    group = group_of(obj)
    version = obj.get("apiVersion", "").split("/")[-1]
    plural = {POLICY_KIND: "egressredirectpolicies"}.get(obj.get("kind"))
    for rule in ((doc.get("spec") or {}).get("matchConstraints") or {}).get("resourceRules") or []:
        if (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])) \
                and (version in rule.get("apiVersions", []) or "*" in rule.get("apiVersions", [])) \
                and (plural in rule.get("resources", []) or "*" in rule.get("resources", [])) \
                and ("CREATE" in rule.get("operations", []) or "*" in rule.get("operations", [])):
            return True
    return False


def admit(doc, obj, params, operation="CREATE"):
    """The messages of the validations `obj` fails under the policy `doc` with `params` (a
    ConfigMap, or None), evaluated as the API server does: `object`, `oldObject`,
    `namespaceObject`, `params`, `request` and `variables` bound. An empty list admits. Raises
    AdmissionError when an expression cannot be evaluated or does not return a bool."""
    spec = doc.get("spec") or {}
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    activation = {
        "object": celpy.json_to_cel(obj),
        "oldObject": celpy.json_to_cel(None),
        "namespaceObject": celpy.json_to_cel({"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": namespace}}),
        "params": celpy.json_to_cel(params),
        "request": celpy.json_to_cel({
            "operation": operation, "namespace": namespace,
            "name": (obj.get("metadata") or {}).get("name", ""),
            "kind": {"group": group_of(obj), "version": obj.get("apiVersion", "").split("/")[-1],
                     "kind": obj.get("kind", "")},
        }),
    }
    variables = {}

    def run(path, expression):
        bound = dict(activation)
        bound["variables"] = celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): v for k, v in variables.items()})
        try:
            value = cel_program(expression).evaluate(bound)
        except (celpy.CELParseError, celpy.CELEvalError, TypeError, ValueError) as error:
            raise AdmissionError(f"{path}: {error}") from error
        if isinstance(value, celpy.CELEvalError):
            raise AdmissionError(f"{path}: {value}")
        return value

    for i, condition in enumerate(spec.get("matchConditions") or []):
        value = run(f"spec.matchConditions.{i}", condition["expression"])
        if not isinstance(value, celpy.celtypes.BoolType):
            raise AdmissionError(f"spec.matchConditions.{i}: not a bool: {value!r}")
        if not value:
            return []
    for i, variable in enumerate(spec.get("variables") or []):
        variables[variable["name"]] = run(f"spec.variables.{i}", variable["expression"])
    messages = []
    for i, validation in enumerate(spec.get("validations") or []):
        value = run(f"spec.validations.{i}.expression", validation["expression"])
        if not isinstance(value, celpy.celtypes.BoolType):
            raise AdmissionError(f"spec.validations.{i}.expression: not a bool: {value!r}")
        if value:
            continue
        if "messageExpression" in validation:
            messages.append(str(run(f"spec.validations.{i}.messageExpression",
                                    validation["messageExpression"])))
        else:
            messages.append(validation.get("message")
                            or f"failed expression: {validation['expression']}")
    return messages


def admission_errors(doc, context):
    """An EgressRedirectPolicy under deploy/ must pass every admission policy there."""
    errors = []
    for policy in context.policies:
        if not vap_matches(policy, doc):
            continue
        params = context.params_for(policy)
        try:
            messages = admit(policy, doc, params)
        except AdmissionError as error:
            failure_policy = (policy.get("spec") or {}).get("failurePolicy", "Fail")
            messages = [f"evaluation error (failurePolicy {failure_policy} applies): {error}"]
        errors += [f"rejected by {describe(policy)}: {m}" for m in messages]
    return errors


# --- kinds without a schema -----------------------------------------------------------------

def metric_known(name):
    if name in METRICS or name in HISTOGRAMS:
        return True
    for histogram in HISTOGRAMS:
        if name in (f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count",
                    f"{histogram}_created"):
            return True
    return name.endswith("_created") and f"{name[:-len('_created')]}_total" in METRICS


def prometheus_rule_errors(doc):
    errors = []
    for g, group in enumerate((doc.get("spec") or {}).get("groups") or []):
        if not group.get("name"):
            errors.append(f"spec.groups.{g}.name: missing")
        for r, rule in enumerate(group.get("rules") or []):
            path = f"spec.groups.{g}.rules.{r}"
            if bool(rule.get("alert")) == bool(rule.get("record")):
                errors.append(f"{path}: needs exactly one of alert and record")
            expr = rule.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{path}.expr: missing")
                continue
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                errors.append(f"{path}.expr: unbalanced brackets")
            for name in sorted(set(METRIC_NAME.findall(expr))):
                if not metric_known(name):
                    errors.append(f"{path}.expr: {name} is not a metric the agent exports")
            if "for" in rule and not PROM_DURATION.match(str(rule["for"])):
                errors.append(f"{path}.for: {rule['for']!r} is not a duration")
            if rule.get("alert") and not (rule.get("labels") or {}).get("severity"):
                errors.append(f"{path}.labels.severity: missing")
    return errors


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
    if doc.get("kind") == "PrometheusRule":
        errors += prometheus_rule_errors(doc)
    return errors


# --- across documents -----------------------------------------------------------------------

class Context:
    """Every document under deploy/, for the checks that look at more than one."""

    def __init__(self, documents):
        self.documents = documents  # [(path, doc)]
        self.policies = self.of_kind("ValidatingAdmissionPolicy")

    def of_kind(self, kind):
        return [doc for _, doc in self.documents if doc.get("kind") == kind]

    def find(self, kind, name, namespace=None):
        for doc in self.of_kind(kind):
            metadata = doc.get("metadata") or {}
            if metadata.get("name") == name and (namespace is None
                                                 or metadata.get("namespace") == namespace):
                return doc
        return None

    def params_for(self, policy):
        """The parameter a binding of `policy` gives it (a ConfigMap here), or None."""
        name = (policy.get("metadata") or {}).get("name")
        for binding in self.of_kind("ValidatingAdmissionPolicyBinding"):
            spec = binding.get("spec") or {}
            ref = spec.get("paramRef") or {}
            if spec.get("policyName") == name and ref.get("name"):
                kind = ((policy.get("spec") or {}).get("paramKind") or {}).get("kind")
                return self.find(kind, ref["name"], ref.get("namespace"))
        return None


def container_port_names(container):
    return {p.get("name") for p in container.get("ports") or [] if p.get("name")}


def workload_pods(context):
    """(kind/name, namespace, pod template labels, containers) of every DaemonSet/Deployment."""
    for kind in ("DaemonSet", "Deployment"):
        for doc in context.of_kind(kind):
            template = (doc.get("spec") or {}).get("template") or {}
            yield (describe(doc), (doc.get("metadata") or {}).get("namespace"),
                   (template.get("metadata") or {}).get("labels") or {},
                   ((template.get("spec") or {}).get("containers") or []))


def cross_errors(context):
    """[(document, error)] for what no single document shows."""
    errors = []
    # Probes must name a port the container declares (the API server does not check).
    for name, _, _, containers in workload_pods(context):
        for container in containers:
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                action = container.get(probe) or {}
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    port = (action.get(handler) or {}).get("port")
                    if isinstance(port, str) and port not in container_port_names(container):
                        errors.append((name, f"container {container.get('name')}: {probe} port "
                                             f"{port!r} is not one of its named ports"))
    # A PodMonitor must select pods that have the port it scrapes.
    for monitor in context.of_kind("PodMonitor"):
        spec = monitor.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") \
            or [(monitor.get("metadata") or {}).get("namespace")]
        targets = [(n, containers) for n, ns, labels, containers in workload_pods(context)
                   if ns in namespaces and all(labels.get(k) == v for k, v in selector.items())]
        if not targets:
            errors.append((describe(monitor), f"selects no DaemonSet or Deployment's pods "
                                              f"({selector} in {namespaces})"))
        for endpoint in spec.get("podMetricsEndpoints") or []:
            for target, containers in targets:
                if not any(endpoint.get("port") in container_port_names(c) for c in containers):
                    errors.append((describe(monitor), f"port {endpoint.get('port')!r} is not a "
                                                      f"named port of {target}"))
    # Alerts on `job="..."` must name a PodMonitor's job (<namespace>/<name>).
    jobs = {f"{(m.get('metadata') or {}).get('namespace')}/{(m.get('metadata') or {}).get('name')}"
            for m in context.of_kind("PodMonitor")}
    for rule_doc in context.of_kind("PrometheusRule"):
        for group in (rule_doc.get("spec") or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                for job in re.findall(r'\bjob="([^"]*)"', str(rule.get("expr", ""))):
                    if job not in jobs:
                        name = rule.get("alert") or rule.get("record")
                        errors.append((describe(rule_doc), f"{name}: job {job!r} is no "
                                                           f"PodMonitor's (have {sorted(jobs)})"))
    # Admission bindings: the policy and its parameter exist.
    for binding in context.of_kind("ValidatingAdmissionPolicyBinding"):
        spec = binding.get("spec") or {}
        policy = context.find("ValidatingAdmissionPolicy", spec.get("policyName"))
        if policy is None:
            errors.append((describe(binding), f"policyName {spec.get('policyName')!r}: no such "
                                              "ValidatingAdmissionPolicy under deploy/"))
            continue
        ref = spec.get("paramRef")
        if ref and context.params_for(policy) is None:
            errors.append((describe(binding), f"paramRef {ref.get('namespace')}/{ref.get('name')}"
                                              ": no such parameter object under deploy/"))
    # The agent reads its trusted namespaces from the tenancy ConfigMap (one list for the
    # admission policy and the agent): EGRESS_TRUSTED_NAMESPACES from that key, no flag.
    tenancy = context.find("ConfigMap", TENANCY_CONFIGMAP[1], TENANCY_CONFIGMAP[0])
    agent = context.find("DaemonSet", "egress-agent", TENANCY_CONFIGMAP[0])
    if tenancy is None:
        errors.append(("ConfigMap/" + TENANCY_CONFIGMAP[1], "missing from deploy/"))
    elif TENANCY_KEY not in (tenancy.get("data") or {}):
        errors.append((describe(tenancy), f"data.{TENANCY_KEY}: missing"))
    elif agent is not None:
        containers = ((agent.get("spec") or {}).get("template") or {}).get("spec", {}).get(
            "containers") or []
        agent_container = next((c for c in containers if c.get("name") == "agent"), {})
        if any(str(a).startswith("--trusted-namespace") for a in agent_container.get("args") or []):
            errors.append((describe(agent), "--trusted-namespace flag: take the list from "
                                            f"{describe(tenancy)} through EGRESS_TRUSTED_NAMESPACES"))
        source = next((e.get("valueFrom", {}).get("configMapKeyRef", {})
                       for e in agent_container.get("env") or []
                       if e.get("name") == "EGRESS_TRUSTED_NAMESPACES"), {})
        if (source.get("name"), source.get("key")) != (TENANCY_CONFIGMAP[1], TENANCY_KEY):
            errors.append((describe(agent), "env EGRESS_TRUSTED_NAMESPACES must come from "
                                            f"{describe(tenancy)} key {TENANCY_KEY}"))
    return errors


def trusted_namespaces(configmap):
    text = ((configmap or {}).get("data") or {}).get(TENANCY_KEY, "")
    return {name.strip() for name in text.split(",") if name.strip()}


def check(doc, path, version, validators, context):
    """(errors, note) for one document."""
    kind = doc.get("kind")
    if kind in BUILTIN_KINDS and group_of(doc) in BUILTIN_GROUPS:
        errors = builtin_errors(doc, version)
        if kind == "ValidatingAdmissionPolicy":
            return errors + vap_errors(doc), (f"(Kubernetes {version} schema, strict; "
                                              "CEL compiled)")
        return errors, f"(Kubernetes {version} schema, strict)"
    if kind == POLICY_KIND:
        errors = policy_errors(doc, validators)
        if not errors:
            errors = admission_errors(doc, context)
        return errors, "(deploy/crd.yaml schema + CEL; admitted by the admission policy)"
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


def tenancy_policy(namespace, selector="absent"):
    """A valid EgressRedirectPolicy in `namespace`; `selector` is its namespaceSelector
    ("absent": no such field)."""
    policy = {
        "apiVersion": "egress-agent.io/v1alpha1",
        "kind": POLICY_KIND,
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"targetRef": {"kind": "Service", "name": "gw"}},
    }
    if selector != "absent":
        policy["spec"]["namespaceSelector"] = selector
    return policy


def configmap_with(text):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": TENANCY_CONFIGMAP[1], "namespace": TENANCY_CONFIGMAP[0]},
            "data": {TENANCY_KEY: text}}


def admission_self_tests(context, validators):
    """The tenancy admission policy's CEL, evaluated with cel-python. (failures, cases run)"""
    failures = []
    policy = context.find("ValidatingAdmissionPolicy", TENANCY_CONFIGMAP[1])
    tenancy = context.find("ConfigMap", TENANCY_CONFIGMAP[1], TENANCY_CONFIGMAP[0])
    if policy is None or tenancy is None:
        return ["self-test: deploy/ has no ValidatingAdmissionPolicy and ConfigMap "
                f"{TENANCY_CONFIGMAP[1]}"], 0
    trusted = sorted(trusted_namespaces(tenancy))
    if not trusted:
        return [f"self-test: {describe(tenancy)} trusts no namespace"], 0
    selector = {"matchLabels": {"egress-agent.io/redirect": "true"}}
    untrusted = "apps"
    cases = [
        # (what, policy, params, admitted?, text the rejection must contain)
        ("namespaceSelector in an untrusted namespace", tenancy_policy(untrusted, selector),
         tenancy, False, untrusted),
        ("an empty namespaceSelector (all namespaces) in an untrusted namespace",
         tenancy_policy(untrusted, {}), tenancy, False, "spec.namespaceSelector"),
        ("namespaceSelector in a namespace named like a prefix of a trusted one",
         tenancy_policy(trusted[0][:-1], selector), tenancy, False, trusted[0][:-1]),
        ("no namespaceSelector in an untrusted namespace", tenancy_policy(untrusted), tenancy,
         True, None),
        ("namespaceSelector: null in an untrusted namespace", tenancy_policy(untrusted, None),
         tenancy, True, None),
        ("namespaceSelector, trusted list with spaces", tenancy_policy(untrusted, selector),
         configmap_with(f" x , {untrusted} "), True, None),
        ("namespaceSelector, ConfigMap without the key", tenancy_policy(trusted[0], selector),
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, False,
         "trusted: none"),
    ]
    for namespace in trusted:
        cases += [
            (f"namespaceSelector in trusted {namespace}", tenancy_policy(namespace, selector),
             tenancy, True, None),
            (f"no namespaceSelector in trusted {namespace}", tenancy_policy(namespace), tenancy,
             True, None),
        ]
    for what, obj, params, admitted, needle in cases:
        schema_errors = policy_errors(obj, validators)
        if schema_errors:
            failures.append(f"self-test (admission): {what}: the test policy is invalid: "
                            f"{schema_errors}")
            continue
        if not vap_matches(policy, obj):
            failures.append(f"self-test (admission): {what}: {describe(policy)} does not match "
                            "EgressRedirectPolicy creation")
            continue
        try:
            messages = admit(policy, obj, params)
        except AdmissionError as error:
            failures.append(f"self-test (admission): {what}: evaluation error: {error}")
            continue
        if admitted and messages:
            failures.append(f"self-test (admission): {what}: rejected: {messages}")
        elif not admitted and not messages:
            failures.append(f"self-test (admission): {what}: admitted")
        elif needle and not any(needle in m for m in messages):
            failures.append(f"self-test (admission): {what}: the message does not mention "
                            f"{needle!r}: {messages}")
    return failures, len(cases)


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
    if not prometheus_rule_errors({"spec": {"groups": [{"name": "g", "rules": [
            {"alert": "A", "expr": "egress_agent_no_such_total > 0",
             "labels": {"severity": "warning"}}]}]}}):
        failures.append("self-test: an alert on an unknown metric was accepted")
    return failures


def load_documents():
    """[(path, [documents])] and the read errors."""
    loaded, errors = [], []
    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))
    for path in files:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as error:
            errors.append(f"{path.relative_to(ROOT)}  YAML: {error}")
            continue
        if not docs:
            errors.append(f"{path.relative_to(ROOT)}  no YAML documents")
        loaded.append((path, docs))
    return loaded, errors


def main():
    version = k8s_version()
    validators = load_policy_validator()
    print(f"kubernetes-validate {kubernetes_validate.__version__}, Kubernetes {version} "
          f"schemas (strict); jsonschema {importlib.metadata.version('jsonschema')}; "
          f"cel-python {importlib.metadata.version('cel-python')}")

    loaded, read_errors = load_documents()
    context = Context([(path, doc) for path, docs in loaded for doc in docs
                       if isinstance(doc, dict)])

    failed = False
    failures = self_tests(version, validators)
    for failure in failures:
        print(f"FAIL  {failure}")
    failed |= bool(failures)
    if not failures:
        print("ok  self-test: bad policy (Service with a Gateway API group, port 70000), "
              "strict unknown-field check and an alert on an unknown metric rejected")
    failures, cases = admission_self_tests(context, validators)
    for failure in failures:
        print(f"FAIL  {failure}")
    failed |= bool(failures)
    if not failures:
        print(f"ok  self-test: admission policy CEL (cel-python), {cases} cases: "
              "namespaceSelector rejected outside trusted namespaces, admitted in them, "
              "policies without it admitted everywhere")

    for error in read_errors:
        print(f"FAIL  {error}")
        failed = True
    for path, docs in loaded:
        shown = path.relative_to(ROOT)
        for doc in docs:
            if not isinstance(doc, dict):
                print(f"FAIL  {shown}  not a mapping: {doc!r:.60}")
                failed = True
                continue
            errors, note = check(doc, path, version, validators, context)
            if errors:
                failed = True
                for error in errors:
                    print(f"FAIL  {shown}  {describe(doc)}: {error}")
            else:
                print(f"ok  {shown}  {describe(doc)}  {note}")

    errors = cross_errors(context)
    for document, error in errors:
        print(f"FAIL  across deploy/  {document}: {error}")
    failed |= bool(errors)
    if not errors:
        print("ok  across deploy/: probe and PodMonitor ports, alert jobs, admission binding "
              "and parameter, trusted namespaces (the agent reads the tenancy ConfigMap)")

    print("FAILED" if failed else "all documents valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
