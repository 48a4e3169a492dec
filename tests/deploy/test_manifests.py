"""The files in deploy/ agree with the code: image and tag, ports, entrypoints, auth and secrets.

Nothing here builds an image or talks to a cluster; the manifests are parsed (YAML, the Dockerfiles,
the README's commands) and checked against `service.cluster`, `service.cli.build_parser()`,
pyproject.toml and the installed Ray and MLflow.
"""

from __future__ import annotations

import argparse
import configparser
import copy
import importlib.metadata
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import build_parser
from service.cluster import CLIENT_PORT, DASHBOARD_PORT, ENTRYPOINT, GCS_PORT, IMAGE, MLFLOW_PORT
from service.spec import resolve_path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
TAGGED_IMAGE = f"{IMAGE}:{VERSION}"
README_SECTION = "## Cloud: from an empty account to a submitted sweep"

RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
LAUNCHER = DEPLOY / "cluster" / "gpu-cluster.yaml"
COMPOSE = DEPLOY / "mlflow" / "docker-compose.yaml"
APP_DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
MLFLOW_DOCKERFILE = DEPLOY / "mlflow" / "Dockerfile"

# Variables that hold a credential: their value comes from a secret, never a literal.
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|ACCESS_KEY|PGPASS", re.IGNORECASE)
# A whole value that is a compose / shell reference: ${VAR}, ${VAR:?message}, ${VAR:-default}.
ENV_REF = re.compile(r"\$\{[A-Z][A-Z0-9_]*(?::?[?-][^}]*)?\}")


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load(path: Path) -> Any:
    docs = load_all(path)
    assert len(docs) == 1, f"{path.name}: expected one YAML document, got {len(docs)}"
    return docs[0]


def deploy_files(pattern: str = "*") -> list[Path]:
    """Files under deploy/ (README.md excepted: see readme_section)."""
    return sorted(p for p in DEPLOY.rglob(pattern) if p.is_file() and p.name != "README.md")


def readme_section() -> str:
    """This walk-through's part of deploy/README.md (the part above it is not checked here)."""
    text = (DEPLOY / "README.md").read_text()
    assert README_SECTION in text, f"deploy/README.md has no {README_SECTION!r}"
    rest = text[text.index(README_SECTION) + len(README_SECTION) :]
    end = re.search(r"^## ", rest, flags=re.M)
    return README_SECTION + (rest[: end.start()] if end else rest)


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        instruction, _, args = full.partition(" ")
        out.append((instruction.upper(), args.strip()))
    assert not pending, f"{path.name} ends inside a continued line"
    return out


def instructions(path: Path, name: str) -> list[str]:
    return [args for inst, args in dockerfile(path) if inst == name]


def installed(dist: str) -> str:
    return importlib.metadata.version(dist)


def substitute(text: str, values: dict[str, str]) -> str:
    """Expand $VAR and ${VAR...} from `values`; an unknown variable is an error, not ''."""

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"unexpected variable ${name} in {text!r}"
        return values[name]

    return re.sub(r"\$\{([A-Za-z_]\w*)[^}]*\}|\$([A-Za-z_]\w*)", one, text)


# --- Kubernetes: every Ray container, wherever KubeRay puts one -----------------------------------


def cluster_specs() -> dict[str, dict]:
    return {
        "raycluster.yaml": load(RAYCLUSTER)["spec"],
        "rayjob.yaml rayClusterSpec": load(RAYJOB)["spec"]["rayClusterSpec"],
    }


def ray_containers() -> Iterator[tuple[str, dict]]:
    """(where, container): the heads, every worker group, the autoscaler, the submitter."""
    for source, spec in cluster_specs().items():
        for c in spec["headGroupSpec"]["template"]["spec"]["containers"]:
            yield f"{source}: head {c['name']}", c
        for group in spec["workerGroupSpecs"]:
            for c in group["template"]["spec"]["containers"]:
                yield f"{source}: worker group {group['groupName']} {c['name']}", c
        if spec.get("enableInTreeAutoscaling"):
            yield f"{source}: autoscaler", {"name": "autoscaler", **spec["autoscalerOptions"]}
    for c in load(RAYJOB)["spec"]["submitterPodTemplate"]["spec"]["containers"]:
        yield f"rayjob.yaml: submitter {c['name']}", c


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def head_container(spec: dict) -> dict:
    (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
    return head


def test_the_image_tag_is_the_package_version():
    assert VERSION == installed("smoothsweep"), "pyproject.toml and the installed package differ"
    images = {}
    for where, c in ray_containers():
        if where.endswith("autoscaler"):  # KubeRay runs the head's image unless one is given
            assert c.get("image", TAGGED_IMAGE) == TAGGED_IMAGE, where
        else:
            images[where] = c.get("image")
    assert len(images) == 5  # head and workers of both cluster specs, and the job submitter
    assert set(images.values()) == {TAGGED_IMAGE}, images
    assert load(LAUNCHER)["docker"]["image"] == TAGGED_IMAGE


def test_every_mention_of_the_image_carries_the_version():
    texts = {p.relative_to(ROOT): p.read_text() for p in deploy_files()}
    texts["deploy/README.md (Cloud)"] = readme_section()
    mentions = 0
    for where, text in texts.items():
        for m in re.finditer(re.escape(IMAGE) + r"[^\s\"'`)]*", text):
            assert m.group(0) == TAGGED_IMAGE, f"{where}: {m.group(0)}"
            mentions += 1
    assert mentions >= 8


def test_every_ray_container_runs_with_token_auth_from_one_secret():
    secrets = set()
    for where, c in ray_containers():
        env = env_of(c)
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", where
        ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        assert ref, f"{where}: RAY_AUTH_TOKEN must come from a secretKeyRef"
        secrets.add((ref["name"], ref["key"]))
    assert len(secrets) == 1, f"the containers read different token secrets: {secrets}"


def test_the_ray_version_is_the_installed_one():
    for source, spec in cluster_specs().items():
        assert spec["rayVersion"] == installed("ray") == "2.60.0", source


def test_the_head_exposes_the_ports_of_service_cluster_inside_the_cluster_only():
    for source, spec in cluster_specs().items():
        head = head_container(spec)
        ports = {p["name"]: p["containerPort"] for p in head["ports"]}
        assert ports == {"gcs-server": GCS_PORT, "dashboard": DASHBOARD_PORT, "client": CLIENT_PORT}
        params = spec["headGroupSpec"]["rayStartParams"]
        assert params["dashboard-host"] == "0.0.0.0", source  # the pod network, behind ClusterIP
        assert int(params.get("port", GCS_PORT)) == GCS_PORT
        assert int(params.get("dashboard-port", DASHBOARD_PORT)) == DASHBOARD_PORT
        assert spec["headGroupSpec"]["serviceType"] == "ClusterIP", source


def test_the_head_gets_the_mlflow_login_and_uri_from_the_cluster_not_the_manifest():
    for source, spec in cluster_specs().items():
        env = env_of(head_container(spec))
        assert "configMapKeyRef" in env["MLFLOW_TRACKING_URI"]["valueFrom"], source
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert "secretKeyRef" in env[name]["valueFrom"], f"{source}: {name}"


def test_the_gpu_worker_group_autoscales_one_gpu_per_pod():
    for source, spec in cluster_specs().items():
        assert spec["enableInTreeAutoscaling"] is True, source
        (group,) = spec["workerGroupSpecs"]
        (c,) = group["template"]["spec"]["containers"]
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1, source
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], source
        assert group["maxReplicas"] >= 1, source
        assert int(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]) == 0  # trials on workers
        assert "nvidia.com/gpu" not in str(head_container(spec).get("resources")), source


def test_the_rayjob_cluster_is_the_raycluster():
    ours, theirs = cluster_specs().values()
    assert ours == theirs, "rayjob.yaml's rayClusterSpec drifted from raycluster.yaml's spec"
    job = load(RAYJOB)["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0


def test_the_rayjob_entrypoint_is_a_smoothsweep_run_the_cli_accepts():
    job = load(RAYJOB)["spec"]
    uri = "https://mlflow.example.org"
    argv = shlex.split(substitute(job["entrypoint"], {"MLFLOW_TRACKING_URI": uri}))
    assert argv[0] == ENTRYPOINT
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.address == "auto"
    assert args.tracking_uri == uri  # the head's MLFLOW_TRACKING_URI, from the ConfigMap
    assert resolve_path(args.spec).is_file()  # a spec shipped in the image
    mounts = head_container(job["rayClusterSpec"])["volumeMounts"]
    assert args.storage in {m["mountPath"] for m in mounts}


# --- the cluster launcher -------------------------------------------------------------------------


def launcher_commands(config: dict, key: str) -> list[str]:
    return [" ".join(c.split()) for c in config[key]]


def ray_start_args(command: str) -> dict[str, Any]:
    """The options of the command's `ray start`, parsed by the installed Ray's own CLI."""
    from ray.scripts.scripts import start

    argv = shlex.split(command[command.index("ray start") :])
    return start.make_context("start", argv[2:]).params


def test_the_launcher_config_is_valid_for_the_installed_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load(LAUNCHER)
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    # Ray's defaults pip-install Ray on every node; every command list is ours instead.
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert raw[key] == [] and prepared[key] == [], key
    assert raw["file_mounts"] == {}  # no credentials synced from a laptop


def test_the_launcher_starts_the_image_with_its_entrypoint_cleared():
    from ray.autoscaler._private.docker import docker_start_cmds

    config = load(LAUNCHER)
    docker = config["docker"]
    options = docker["run_options"] + docker["worker_run_options"]
    argv = shlex.split(
        docker_start_cmds(
            "ray", docker["image"], {}, "c", options, "smoothsweep", "/home/ray", "docker"
        )
    )
    assert instructions(APP_DOCKERFILE, "ENTRYPOINT")  # the image has one, so it must be cleared
    assert "--entrypoint=" in argv
    assert argv[-2:] == [TAGGED_IMAGE, "bash"]
    assert "--gpus" in argv and argv[argv.index("--gpus") + 1] == "all"


def test_the_launcher_head_and_workers_use_the_ports_of_service_cluster():
    config = load(LAUNCHER)
    (head,) = [c for c in launcher_commands(config, "head_start_ray_commands") if "ray start" in c]
    args = ray_start_args(head)
    assert args["head"] is True
    assert args["port"] == GCS_PORT
    assert args["dashboard_port"] == DASHBOARD_PORT
    assert args["ray_client_server_port"] == CLIENT_PORT
    assert args["dashboard_host"] == "127.0.0.1"  # reached through `ray dashboard`'s SSH tunnel
    (worker,) = [
        c for c in launcher_commands(config, "worker_start_ray_commands") if "ray start" in c
    ]
    assert ray_start_args(worker)["address"] == f"$RAY_HEAD_IP:{GCS_PORT}"


def test_every_launcher_ray_start_has_token_auth_read_from_the_node():
    config = load(LAUNCHER)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (cmd,) = [c for c in launcher_commands(config, key) if "ray start" in c]
        before = cmd[: cmd.index("ray start")]
        assert "RAY_AUTH_MODE=token" in before, key
        assert re.search(r'RAY_AUTH_TOKEN="\$\(cat /run/smoothsweep/ray-auth-token\)"', before), key
        assert before.startswith("test -s /run/smoothsweep/ray-auth-token &&"), (
            key
        )  # no token, no start


def test_the_launcher_fetches_only_secrets_its_iam_policies_grant():
    config = load(LAUNCHER)
    region = config["provider"]["region"]
    policies = {
        name: json.loads((DEPLOY / "cluster" / "iam" / f"{name}-policy.json").read_text())
        for name in ("head", "worker")
    }

    def granted(policy: dict) -> set[str]:
        return {
            r.removeprefix(f"arn:aws:ssm:{region}:*:parameter")
            for s in policy["Statement"]
            if "ssm:GetParameter" in json.dumps(s["Action"])
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
            if r.startswith(f"arn:aws:ssm:{region}:*:parameter/smoothsweep/")
        }

    def fetched(commands: list[str]) -> set[str]:
        text = " ".join(commands)
        assert f"--region {region}" in text
        loop = re.search(r"for name in ([\w\s-]+?); do", text)
        names = loop.group(1).split() if loop else []
        names += re.findall(r"--name (/smoothsweep/[\w-]+)", text)
        return {n if n.startswith("/") else f"/smoothsweep/{n}" for n in names}

    head = fetched(config["initialization_commands"])
    worker = fetched(config["available_node_types"]["gpu"]["initialization_commands"])
    assert head == granted(policies["head"]) and "/smoothsweep/ray-auth-token" in head
    assert worker == granted(policies["worker"]) == {"/smoothsweep/ray-auth-token"}
    iam = {
        t: n["node_config"]["IamInstanceProfile"]["Name"]
        for t, n in config["available_node_types"].items()
    }
    assert iam == {"head": "smoothsweep-ray-head", "gpu": "smoothsweep-ray-worker"}


def test_the_launcher_nodes_are_a_cpu_head_and_autoscaled_gpu_workers():
    types = load(LAUNCHER)["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}
    assert types["head"]["node_config"]["InstanceType"].startswith(("m", "c", "r"))
    gpu = types["gpu"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))
    assert 0 == gpu["min_workers"] < gpu["max_workers"]


# --- the images -----------------------------------------------------------------------------------


def python_minor() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_app_image_installs_this_package_as_a_non_root_user():
    (base,) = instructions(APP_DOCKERFILE, "FROM")
    assert base == f"python:{python_minor()}-slim" == "python:3.11-slim"
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert json.loads(instructions(APP_DOCKERFILE, "ENTRYPOINT")[-1]) == [ENTRYPOINT]
    assert ENTRYPOINT in PYPROJECT["project"]["scripts"]
    user = instructions(APP_DOCKERFILE, "USER")[-1]
    assert user not in {"root", "0"}
    assert any(
        "--uid 1000" in r and r.rstrip().endswith(f" {user}")
        for r in instructions(APP_DOCKERFILE, "RUN")
    )
    copied = {src for args in instructions(APP_DOCKERFILE, "COPY") for src in args.split()[:-1]}
    needed = set(PYPROJECT["tool"]["setuptools"]["packages"]) | {
        "pyproject.toml",
        PYPROJECT["project"]["readme"],
    }
    assert copied == needed, "COPY exactly the package's sources (there is no .dockerignore)"
    assert all((ROOT / src).exists() for src in copied)
    assert not (ROOT / ".dockerignore").exists()


def pins(path: Path) -> dict[str, str]:
    text = " ".join(instructions(path, "RUN"))
    return {
        name.lower(): version
        for name, version in re.findall(r"([A-Za-z0-9_-]+)(?:\[[\w,]+\])?==([\w.]+)", text)
    }


def test_the_mlflow_image_pins_the_installed_mlflow_with_its_auth_extra():
    assert pins(MLFLOW_DOCKERFILE)["mlflow"] == installed("mlflow") == "3.17.2"
    assert '"mlflow[auth]==' in " ".join(instructions(MLFLOW_DOCKERFILE, "RUN"))  # Flask-WTF
    assert pins(MLFLOW_DOCKERFILE)["boto3"] == pins(APP_DOCKERFILE)["boto3"]
    (base,) = instructions(MLFLOW_DOCKERFILE, "FROM")
    assert base == f"python:{python_minor()}-slim"
    assert instructions(MLFLOW_DOCKERFILE, "USER")[-1] not in {"root", "0"}
    for args in instructions(MLFLOW_DOCKERFILE, "COPY"):
        assert (MLFLOW_DOCKERFILE.parent / args.split()[0]).is_file(), args
    assert load(COMPOSE)["services"]["mlflow"]["image"].endswith(":" + installed("mlflow"))


def test_every_dockerfile_runs_as_non_root_and_pins_the_installed_ray_and_mlflow():
    dockerfiles = deploy_files("Dockerfile*")
    assert {APP_DOCKERFILE, MLFLOW_DOCKERFILE} <= set(dockerfiles)
    for path in dockerfiles:
        users = instructions(path, "USER")
        assert users and users[-1].split(":")[0] not in {"root", "0"}, path.relative_to(ROOT)
        for dist in ("ray", "mlflow", "torch"):
            if dist in pins(path):
                assert pins(path)[dist] == installed(dist).split("+")[0], (path, dist)


def test_the_pyproject_pins_are_the_installed_versions():
    deps = dict(
        re.match(r"([\w-]+)(?:\[[\w,]+\])?==(.+)", d).groups()
        for d in PYPROJECT["project"]["dependencies"]
        if "==" in d
    )
    for dist in ("ray", "mlflow", "torch"):
        assert installed(dist).split("+")[0] == deps[dist], dist


# --- MLflow with PostgreSQL, S3 and basic auth ----------------------------------------------------


def mlflow_service() -> dict:
    return load(COMPOSE)["services"]["mlflow"]


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} must be given once: {argv}"
    return argv[argv.index(name) + 1]


def test_the_mlflow_server_runs_the_basic_auth_app_on_mlflow_port():
    svc = mlflow_service()
    argv = [str(a) for a in svc["command"]]
    app = option(argv, "--app-name")
    assert app == "basic-auth"
    assert app in {e.name for e in importlib.metadata.entry_points(group="mlflow.app")}
    assert int(option(argv, "--port")) == MLFLOW_PORT
    assert {p.rsplit(":", 1)[-1] for p in svc["ports"]} == {str(MLFLOW_PORT)}
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])  # plain HTTP stays on the VM
    assert option(argv, "--backend-store-uri").startswith("postgresql+psycopg2://")
    assert option(argv, "--artifacts-destination").startswith("s3://")
    caddy = load(COMPOSE)["services"]["caddy"]["command"]
    assert caddy[caddy.index("--to") + 1] == f"mlflow:{MLFLOW_PORT}"


def test_the_basic_auth_config_holds_no_secret_and_names_a_database_that_is_created():
    ini = configparser.ConfigParser()
    ini.read(DEPLOY / "mlflow" / "basic_auth.ini")
    section = dict(ini["mlflow"])
    assert {"default_permission", "database_uri"} <= set(section)  # what MLflow reads without .get
    assert "admin_password" not in section  # from MLFLOW_AUTH_ADMIN_PASSWORD instead
    assert re.fullmatch(
        r"postgresql\+psycopg2://mlflow@postgres:5432/(\w+)", section["database_uri"]
    )
    database = section["database_uri"].rsplit("/", 1)[-1]
    sql = "".join(p.read_text() for p in (DEPLOY / "mlflow" / "initdb").glob("*.sql"))
    assert f"CREATE DATABASE {database};" in sql
    dockerfile_env = " ".join(instructions(MLFLOW_DOCKERFILE, "ENV"))
    assert "MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini" in dockerfile_env


def test_the_mlflow_entrypoint_gets_every_variable_it_requires_from_compose():
    script = (DEPLOY / "mlflow" / "entrypoint.sh").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", script)) | {"MLFLOW_ARTIFACTS_BUCKET"}
    env = mlflow_service()["environment"]
    assert required <= set(env), sorted(required - set(env))
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"].startswith("${MLFLOW_ADMIN_USERNAME")


# --- no credential is ever written down -----------------------------------------------------------


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def test_no_credential_is_a_literal_in_any_manifest():
    checked = 0
    for path in deploy_files("*.y*ml"):
        for where, node in walk(load_all(path)):
            here = f"{path.relative_to(ROOT)}{where}"
            # Kubernetes env entries: a secret is a secretKeyRef.
            if (
                isinstance(node, dict)
                and "name" in node
                and ("value" in node or "valueFrom" in node)
            ):
                if SECRET_NAME.search(node["name"]):
                    assert "secretKeyRef" in node.get("valueFrom", {}), here
                    checked += 1
            # compose environment mappings: a secret is ${VAR...} from the shell.
            if where.endswith(".environment") and isinstance(node, dict):
                for key, value in node.items():
                    if SECRET_NAME.search(key):
                        assert ENV_REF.fullmatch(str(value)), f"{here}.{key}: {value!r}"
                        checked += 1
            # shell commands: NAME=value with a secret name is read from somewhere at run time.
            if isinstance(node, str):
                for name, value in re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S+)", node):
                    if SECRET_NAME.search(name):
                        assert value.startswith(('"$(', "$(", "${")), f"{here}: {name}={value}"
                        checked += 1
    assert checked >= 15


def test_no_password_in_any_uri_or_dockerfile():
    texts = {p.relative_to(ROOT): p.read_text() for p in deploy_files()}
    texts["deploy/README.md (Cloud)"] = readme_section()
    for where, text in texts.items():
        for m in re.finditer(r"[a-z0-9+]+://([^/\s@\"']+)@", text):
            assert ":" not in m.group(1), f"{where}: a password in {m.group(0)}"
    dockerfiles = deploy_files("Dockerfile*")
    assert {APP_DOCKERFILE, MLFLOW_DOCKERFILE} <= set(dockerfiles)
    for path in dockerfiles:
        for inst, args in dockerfile(path):
            if inst in {"ENV", "ARG"}:
                assert not SECRET_NAME.search(args), f"{path.name}: {inst} {args}"


# --- the README's walk-through --------------------------------------------------------------------

PENDING = {"submit", "jobs"}  # subcommands being added to service/cli.py alongside these files


def readme_commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme_section(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip().startswith(f"{ENTRYPOINT} ")]


def test_the_readme_commands_parse_with_the_real_cli():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    known = set(sub.choices)
    values = {"JOB": "raysubmit_1", "SWEEP": "sinusoid-1", "MLFLOW_DOMAIN": "mlflow.example.org"}
    commands = readme_commands()
    assert len(commands) >= 4
    pending = set()
    for command in commands:
        argv = shlex.split(substitute(command, values))[1:]
        if argv[0] not in known:
            assert argv[0] in PENDING, f"unknown subcommand in deploy/README.md: {command}"
            pending.add(argv[0])
            continue
        parser.parse_args(argv)
    if pending:
        pytest.skip(f"service/cli.py has no {sorted(pending)} yet; the other commands parse")
