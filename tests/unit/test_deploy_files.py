"""The deployment files, checked offline (no Docker engine runs here): docker-compose.yml
against the Compose Specification's JSON schema, every command it runs against the real
``atom`` argument parsers, every variable it sets against what ATOM reads; the Dockerfile's
shape; the deploy script's syntax."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from atom.config import Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ATOM_SERVICES = {
    name: svc
    for name, svc in COMPOSE["services"].items()
    if str(svc.get("image", "")).startswith("${ATOM_IMAGE")
}
SOURCE_DIRS = ("atom", "api", "workers", "beat", "cli")


def compose_schema() -> dict:
    """The Compose Specification's schema (compose-spec/compose-spec, schema/compose-spec.json)
    as vendored by the check-jsonschema package (a dev dependency)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def test_compose_file_follows_the_compose_specification():
    schema = compose_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path)
    )
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_schema_check_can_fail():
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_done"
    errors = list(jsonschema.Draft7Validator(compose_schema()).iter_errors(broken))
    assert len(errors) == 2


def test_compose_runs_every_process_type_and_the_infrastructure():
    services = COMPOSE["services"]
    commands = {name: tuple(svc["command"]) for name, svc in ATOM_SERVICES.items()}
    assert commands["migrate"] == ("db", "upgrade")
    assert commands["api"][0] == "api" and commands["beat"] == ("beat",)
    assert commands["worker"][0] == "worker" and commands["flower"][0] == "flower"
    assert commands["ml-worker"] == ("worker", "--pool", "ml")
    # PostgreSQL and Redis persist to named volumes and have healthchecks
    for name, path in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        assert "healthcheck" in services[name]
        assert any(v.endswith(":" + path) for v in services[name]["volumes"])
        assert services[name]["volumes"][0].split(":")[0] in COMPOSE["volumes"]
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    # the migration runs once, before every long-running ATOM process
    assert services["migrate"]["restart"] == "no"
    for name, svc in ATOM_SERVICES.items():
        if name != "migrate":
            assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
            assert svc["healthcheck"]["test"][:3] == ["CMD", "atom", "health"]
            assert svc["healthcheck"]["test"][3] == svc["command"][0]
    # --scale worker=4: no fixed container name or host port on the step workers
    for name in ("worker", "ml-worker"):
        assert "container_name" not in services[name] and "ports" not in services[name]
    # exactly one beat
    assert services["beat"]["deploy"]["replicas"] == 1


class _Parsed(Exception):
    def __init__(self, prog: str, namespace: argparse.Namespace):
        super().__init__(prog)
        self.prog, self.namespace = prog, namespace


@pytest.fixture
def parse_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Run ``atom ARGV`` up to its argument parsing (the real parsers), then stop."""
    import cli.main
    from atom.observe import telemetry

    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(self.prog, real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(telemetry, "setup_process", lambda *a, **k: None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://atom:pw@postgres:5432/atom")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("ATOM_DATA_DIR", str(tmp_path))

    def parse(argv: list[str]) -> _Parsed:
        with pytest.raises(_Parsed) as parsed:
            cli.main.main(list(argv))
        return parsed.value

    return parse


@pytest.mark.parametrize("service", sorted(ATOM_SERVICES))
def test_every_compose_command_is_an_atom_command(service: str, parse_only):
    command = ATOM_SERVICES[service]["command"]
    parsed = parse_only(command)
    assert parsed.prog in ("atom", f"atom {command[0]}")
    probe = ATOM_SERVICES[service].get("healthcheck", {}).get("test")
    if probe:
        assert parse_only(probe[2:]).namespace.process == command[0]


def test_a_command_the_cli_lacks_is_caught(parse_only):
    with pytest.raises(SystemExit):
        parse_only(["worker", "--no-such-option"])
    with pytest.raises(SystemExit):
        parse_only(["migrate"])


class _Recorder(dict):
    """A mapping that remembers every name looked up in it."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def get(self, key, default=None):
        self.seen.add(key)
        return default

    def __getitem__(self, key):
        self.seen.add(key)
        raise KeyError(key)

    def __contains__(self, key):
        self.seen.add(key)
        return False


def atom_variables() -> set[str]:
    """Every environment variable ATOM reads: Settings.from_env, and os.environ look-ups."""
    recorder = _Recorder()
    Settings.from_env(recorder)
    found = set(recorder.seen)
    pattern = re.compile(r"""(?:environ\.get|environ\[|getenv)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            found.update(pattern.findall(path.read_text()))
    return found


def test_every_variable_compose_sets_on_atom_is_one_atom_reads():
    known = atom_variables()
    assert {"DATABASE_URL", "REDIS_URL", "ATOM_SECRET_KEY", "ATOM_API_KEY"} <= known
    for name, svc in ATOM_SERVICES.items():
        unknown = set(svc["environment"]) - known
        assert not unknown, f"{name} sets variables ATOM does not read: {unknown}"
        assert "env_file" not in svc  # only the variables listed, nothing unchecked


def test_the_env_template_names_only_variables_that_are_used():
    known = atom_variables()
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    template = (ROOT / "deploy" / "env.example").read_text()
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", template, re.M))
    assert names and names <= known | interpolated, names - known - interpolated
    # and every secret compose requires is in the template
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required <= names


def _stages(dockerfile: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_pinned_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    stages = _stages(text)
    assert len(stages) >= 2
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    final = stages[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(line.startswith("HEALTHCHECK ") and '"atom", "health"' in line for line in final)
    assert any(line.startswith("COPY --from=build") for line in final)
    assert 'ENTRYPOINT ["atom"]' in final
    # the image installs exactly the pinned tree
    assert "-c constraints.txt" in text


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build():
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "**"  # everything excluded, then only what the image needs
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", *SOURCE_DIRS}
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M))
    for sources in copied:
        assert set(sources.split()) <= allowed


def test_deploy_script_parses():
    script = ROOT / "deploy_enhanced_workflow_automation.sh"
    assert script.stat().st_mode & 0o111
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if shutil.which("shellcheck"):
        lint = subprocess.run(
            ["shellcheck", "-S", "warning", str(script)], capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout


# ---- Kubernetes ------------------------------------------------------------------------------

K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"


def manifests() -> list[dict]:
    """Every object the kustomization applies, and the example Secret."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for name in [*kustomization["resources"], "secret.example.yaml"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def test_kubernetes_manifests_follow_the_kubernetes_schemas():
    import kubernetes_validate

    checked = 0
    for doc in manifests():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked below
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 12
    broken = json.loads(json.dumps(by_kind("Deployment")["atom-api"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kubernetes_runs_every_process_with_probes_and_one_beat(parse_only):
    deployments = by_kind("Deployment")
    assert set(deployments) == {
        "atom-api",
        "atom-worker",
        "atom-ml-worker",
        "atom-beat",
        "atom-flower",
    }
    secret_keys = set(by_kind("Secret")["atom"]["stringData"])
    config_keys = set(by_kind("ConfigMap")["atom-config"]["data"])
    assert config_keys <= atom_variables()
    assert {"DATABASE_URL", "REDIS_URL"} <= secret_keys
    pods = [d["spec"]["template"]["spec"] for d in deployments.values()]
    pods.append(by_kind("Job")["atom-migrate"]["spec"]["template"]["spec"])
    for pod in pods:
        (container,) = pod["containers"]
        assert {"configMapRef": {"name": "atom-config"}} in container["envFrom"]
        assert {"secretRef": {"name": "atom"}} in container["envFrom"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        parse_only(container["args"])  # a command the CLI has
        for probe in ("livenessProbe", "readinessProbe"):
            if "exec" in container.get(probe, {}):
                assert parse_only(container[probe]["exec"]["command"][1:]).prog == "atom"
    api = deployments["atom-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/api/workflows/monitoring/health"
    beat = deployments["atom-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert "livenessProbe" in beat["template"]["spec"]["containers"][0]
    ml = deployments["atom-ml-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert ml["args"] == ["worker", "--pool", "ml"]
    budgets = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in by_kind("PodDisruptionBudget").values()
    }
    assert {"atom-api", "atom-worker"} <= budgets


def step_lists() -> set[str]:
    """The Redis lists of the step queue: kombu keeps one per priority step."""
    from atom.celery_app import STEPS_QUEUE
    from atom.observe.probe import PRIORITY_SEPARATOR, PRIORITY_STEPS

    return {STEPS_QUEUE} | {f"{STEPS_QUEUE}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS}


def _kinds(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_workers_scale_on_the_sum_of_their_queue_lists_with_keda(source: str):
    docs = manifests() if source == "kustomize" else helm_render()
    deployments = _kinds(docs, "Deployment")
    scaled = _kinds(docs, "ScaledObject")
    (auth,) = _kinds(docs, "TriggerAuthentication").values()
    secret_keys = set(_kinds(docs, "Secret")["atom"]["stringData"])
    queues = {}
    for obj in scaled.values():
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
        lengths = set()
        for trigger in spec["triggers"]:
            assert trigger["type"] == "redis"
            lengths.add(int(trigger["metadata"]["listLength"]))
            assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert len(lengths) == 1 and lengths.pop() > 0
        names = [t.get("name") for t in spec["triggers"]]
        if len(names) > 1:  # KEDA takes the largest of several triggers unless told to sum
            modifiers = spec["advanced"]["scalingModifiers"]
            assert sorted(modifiers["formula"].split(" + ")) == sorted(names)
            assert modifiers["metricType"] == "AverageValue"
        target = spec["scaleTargetRef"]["name"]
        queues[target] = {t["metadata"]["listName"] for t in spec["triggers"]}
        # the replica count is KEDA's: the Deployment does not fight it on every rollout
        if source == "helm":
            assert "replicas" not in deployments[target]["spec"]
    assert queues == {"atom-worker": step_lists(), "atom-ml-worker": {"atom.ml"}}
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == "atom" and ref["key"] in secret_keys


# ---- Helm ------------------------------------------------------------------------------------
# Rendered by Helm v4's own engine (helm-python-sdk, a dev dependency: the helm.sh/helm/v4
# packages built as a shared library), as `helm template atom deploy/helm/atom` would: no helm
# binary, no cluster.

HELM = ROOT / "deploy" / "helm" / "atom"
SECRETS = {
    "DATABASE_URL": "postgresql://atom:change-me@postgres:5432/atom",
    "REDIS_URL": "redis://:change-me@redis:6379/0",
    "ATOM_SECRET_KEY": "change-me",
    "FLOWER_BASIC_AUTH": "admin:change-me",
    "REDIS_ADDRESS": "redis:6379",
    "REDIS_PASSWORD": "change-me",
}


def helm_render(values: dict | None = None) -> list[dict]:
    """Every object the chart renders for a release called ``atom``."""
    import helm_python

    chart = helm_python.Chart.load(str(HELM))
    given = {"secret": {"values": SECRETS}} if values is None else values
    rendered = chart.render(given, name="atom", namespace="atom", is_install=True)
    docs: list[dict] = []
    for name, text in rendered.items():
        if not name.endswith("NOTES.txt"):  # what `helm install` prints, not an object
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def test_the_helm_chart_tells_how_to_reach_it_and_make_a_first_key(parse_only):
    import helm_python

    chart = helm_python.Chart.load(str(HELM))
    notes = chart.render({"secret": {"values": SECRETS}}, name="atom", namespace="prod")
    text = notes["atom/templates/NOTES.txt"]
    assert "port-forward svc/atom-api 5058" in text and "/api/docs" in text
    command = "exec deploy/atom-api -- atom keys create --tenant default --role admin"
    assert command in text
    parse_only(command.split(" -- atom ")[1].split())  # a command the CLI has


VARIANTS = {
    "defaults": {"secret": {"values": SECRETS}},
    "own secret, no KEDA, no Flower": {
        "secret": {"existingSecret": "atom-prod"},
        "keda": {"enabled": False},
        "flower": {"enabled": False},
        "migrate": {"enabled": False},
        "imagePullSecrets": [{"name": "registry"}],
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_helm_chart_lints_renders_and_follows_the_kubernetes_schemas(variant: str):
    import helm_python
    import kubernetes_validate

    values = VARIANTS[variant]
    report = helm_python.lint(str(HELM), values, strict=True, kube_version=f"v{K8S_VERSION}")
    assert report["errors"] == [] and report["total_charts_linted"] == 1
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    docs = helm_render(values)
    if variant != "defaults":
        for doc in docs:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert len(_kinds(docs, "Deployment")) == 4 and _kinds(docs, "Job") == {}
        return
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked in test_workers_scale_on_the_sum_of_their_queue_lists
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 13
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 5 and kinds.count("PodDisruptionBudget") == 3


def _pod(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def _shape(doc: dict) -> dict:
    """What a process is: its command, probes, settings' sources, hardening and grace."""
    pod = _pod(doc)
    (container,) = pod["containers"]
    return {
        "args": container["args"],
        "probes": {p: container.get(p) for p in ("readinessProbe", "livenessProbe")},
        "envFrom": container["envFrom"],
        "ports": container.get("ports"),
        "securityContext": container["securityContext"],
        "podSecurityContext": pod["securityContext"],
        "grace": pod.get("terminationGracePeriodSeconds"),
        "resources": container["resources"],
        "mounts": sorted(m["mountPath"] for m in container["volumeMounts"]),
    }


def test_the_helm_chart_runs_what_the_kustomize_manifests_run(parse_only):
    chart = helm_render()
    ours, theirs = manifests(), chart
    for kind in ("Deployment", "Job"):
        kustomized, charted = _kinds(ours, kind), _kinds(theirs, kind)
        assert set(charted) == set(kustomized), kind
        for name, doc in kustomized.items():
            assert _shape(charted[name]) == _shape(doc), name
            parse_only(_pod(charted[name])["containers"][0]["args"])  # a command the CLI has
    config = _kinds(chart, "ConfigMap")["atom-config"]["data"]
    assert config == _kinds(ours, "ConfigMap")["atom-config"]["data"]
    assert set(config) <= atom_variables()
    assert _kinds(chart, "Secret")["atom"]["stringData"] == SECRETS
    for name, budget in _kinds(ours, "PodDisruptionBudget").items():
        charted = _kinds(chart, "PodDisruptionBudget")[name]["spec"]
        assert {k: v for k, v in charted.items() if k != "selector"} == {
            k: v for k, v in budget["spec"].items() if k != "selector"
        }
    for name, service in _kinds(ours, "Service").items():
        assert _kinds(chart, "Service")[name]["spec"]["ports"] == service["spec"]["ports"]
    api = _kinds(chart, "Deployment")["atom-api"]
    assert api["spec"]["replicas"] == 2
    probe = _pod(api)["containers"][0]["readinessProbe"]["httpGet"]
    assert probe["path"] == "/api/workflows/monitoring/health"
    # selectors pick each component's own pods
    for name, doc in _kinds(chart, "Deployment").items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels["app.kubernetes.io/name"] == name


def test_the_helm_chart_has_one_beat_and_takes_the_database_url_from_a_secret():
    import helm_python

    docs = helm_render(
        {"secret": {"existingSecret": "atom-prod"}, "beat": {"replicas": 3}, "api": {"replicas": 4}}
    )
    deployments = _kinds(docs, "Deployment")
    beat = deployments["atom-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert deployments["atom-api"]["spec"]["replicas"] == 4
    assert _kinds(docs, "Secret") == {}  # the operator's Secret, not one made from values
    for doc in [*deployments.values(), *_kinds(docs, "Job").values()]:
        (container,) = _pod(doc)["containers"]
        assert {"secretRef": {"name": "atom-prod"}} in container["envFrom"]
    (auth,) = _kinds(docs, "TriggerAuthentication").values()
    assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} == {"atom-prod"}
    with pytest.raises(helm_python.HelmRenderError, match="DATABASE_URL is required"):
        helm_render({})
    # KEDA off: the Deployments keep their replica counts, and no ScaledObject is rendered
    plain = helm_render({"secret": {"values": SECRETS}, "keda": {"enabled": False}})
    assert _kinds(plain, "ScaledObject") == {}
    assert _kinds(plain, "Deployment")["atom-worker"]["spec"]["replicas"] == 1


def test_helm_pods_roll_when_the_settings_change():
    def checksums(values: dict) -> dict[str, dict]:
        return {
            name: doc["spec"]["template"]["metadata"]["annotations"]
            for name, doc in _kinds(helm_render(values), "Deployment").items()
        }

    base = checksums({"secret": {"values": SECRETS}})
    louder = checksums({"secret": {"values": SECRETS}, "config": {"ATOM_LOG_LEVEL": "DEBUG"}})
    moved = checksums({"secret": {"values": {**SECRETS, "DATABASE_URL": "postgresql://x/y"}}})
    for name in base:
        assert louder[name]["checksum/config"] != base[name]["checksum/config"]
        assert louder[name]["checksum/secret"] == base[name]["checksum/secret"]
        assert moved[name]["checksum/secret"] != base[name]["checksum/secret"]
