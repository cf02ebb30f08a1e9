"""The Kubernetes manifests in k8s/, checked offline.

- Core resources (Deployment, Service, HPA, NetworkPolicy, PVC, ConfigMap) are validated by
  kubernetes-validate against the Kubernetes 1.37 OpenAPI schemas, strictly (unknown fields fail).
- KServe resources (InferenceService, ServingRuntime) have no schema there: they are checked
  against the subset of fields KServe documents for serving.kserve.io v1beta1 / v1alpha1, with
  unknown fields rejected at every level we use, so a typo cannot pass.
- The manifests agree with the rest of the bundle: images = the compose images, probes = the
  image's model-ready healthchecks, the catalog's models and batching in KServe's TorchServe config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from scripts import catalog

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
K8S_VERSION = "1.37.0"
KSERVE_KINDS = {("serving.kserve.io/v1beta1", "InferenceService"),
                ("serving.kserve.io/v1alpha1", "ServingRuntime")}
TS_PROBE = ["python", "/home/model-server/bundle/docker/torchserve/healthcheck.py"]
TFS_PROBE = ["/usr/local/bin/busybox", "sh", "/usr/local/bin/tfserving-healthcheck"]


def load_all() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


DOCS = load_all()


def _id(item) -> str:
    path, doc = item
    return f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}"


def test_manifests_exist():
    kinds = {(p.parent.name, d["kind"]) for p, d in DOCS}
    for expected in [("plain", "Deployment"), ("plain", "Service"),
                     ("plain", "HorizontalPodAutoscaler"), ("gpu", "Deployment"),
                     ("kserve", "InferenceService"), ("kserve", "ServingRuntime"),
                     ("canary", "Deployment"), ("canary", "InferenceService")]:
        assert expected in kinds, expected


@pytest.mark.parametrize("item", [i for i in DOCS
                                  if (i[1]["apiVersion"], i[1]["kind"]) not in KSERVE_KINDS],
                         ids=_id)
def test_core_resources_validate_strictly(item):
    _, doc = item
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_is_real():
    """Negative control: the same call rejects a misspelt field and a wrong type."""
    _, deployment = next(i for i in DOCS if i[1]["kind"] == "Deployment")
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, K8S_VERSION, strict=True)


# --- KServe: the documented fields we use, closed against typos ---------------------------------

def _closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


QUANTITY = {"type": ["string", "integer"]}
RESOURCES = _closed({"requests": {"type": "object", "additionalProperties": QUANTITY},
                     "limits": {"type": "object", "additionalProperties": QUANTITY}})
METADATA = {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"}}}
# v1beta1 ModelSpec (predictor.model): the model format, runtime selection and storage.
MODEL_SPEC = _closed({
    "modelFormat": _closed({"name": {"enum": ["pytorch", "tensorflow"]},
                            "version": {"type": "string"}}, ("name",)),
    "runtime": {"type": "string"},
    "runtimeVersion": {"type": "string"},
    "protocolVersion": {"enum": ["v1", "v2", "grpc-v2"]},
    "storageUri": {"type": "string", "pattern": r"^(pvc|s3|gs|https?|hdfs|oci)://"},
    "resources": RESOURCES,
    "env": {"type": "array"},
    "args": {"type": "array"},
}, ("modelFormat", "storageUri"))
INFERENCE_SERVICE = _closed({
    "apiVersion": {"const": "serving.kserve.io/v1beta1"},
    "kind": {"const": "InferenceService"},
    "metadata": METADATA,
    "spec": _closed({"predictor": _closed({
        "model": MODEL_SPEC,
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 1},
        "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
        "scaleTarget": {"type": "integer"},
        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
        "containerConcurrency": {"type": "integer"},
        "timeout": {"type": "integer"},
        "serviceAccountName": {"type": "string"},
        # PredictorSpec inlines the core PodSpec: these two are its fields.
        "automountServiceAccountToken": {"type": "boolean"},
        "securityContext": {"type": "object"},
    }, ("model",))}, ("predictor",)),
}, ("apiVersion", "kind", "metadata", "spec"))
SERVING_RUNTIME = _closed({
    "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
    "kind": {"const": "ServingRuntime"},
    "metadata": METADATA,
    "spec": _closed({
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "supportedModelFormats": {"type": "array", "minItems": 1, "items": _closed({
            "name": {"type": "string"}, "version": {"type": "string"},
            "autoSelect": {"type": "boolean"}, "priority": {"type": "integer"}}, ("name",))},
        "protocolVersions": {"type": "array", "items": {"enum": ["v1", "v2", "grpc-v2"]}},
        "containers": {"type": "array", "minItems": 1},
        "volumes": {"type": "array"},
    }, ("supportedModelFormats", "containers")),
}, ("apiVersion", "kind", "metadata", "spec"))


@pytest.mark.parametrize("item", [i for i in DOCS
                                  if (i[1]["apiVersion"], i[1]["kind"]) in KSERVE_KINDS], ids=_id)
def test_kserve_resources_structure(item):
    _, doc = item
    schema = INFERENCE_SERVICE if doc["kind"] == "InferenceService" else SERVING_RUNTIME
    jsonschema.validate(doc, schema)
    if doc["kind"] == "ServingRuntime":
        # Its containers are core Containers: validate them through a Pod.
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
               "spec": {"containers": doc["spec"]["containers"],
                        "volumes": doc["spec"].get("volumes", [])}}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        assert doc["spec"]["containers"][0]["name"] == "kserve-container"


def test_kserve_check_is_real():
    _, isvc = next(i for i in DOCS if i[1]["kind"] == "InferenceService")
    typo = json.loads(json.dumps(isvc))
    typo["spec"]["predictor"]["model"]["storageURI"] = typo["spec"]["predictor"]["model"].pop(
        "storageUri")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, INFERENCE_SERVICE)
    token = json.loads(json.dumps(isvc))
    token["spec"]["predictor"]["automountServiceAccountToken"] = "no"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(token, INFERENCE_SERVICE)


def test_kserve_torchserve_uses_the_bundle_runtime():
    runtimes = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "ServingRuntime"}
    for path, doc in DOCS:
        if doc["kind"] == "InferenceService":
            model = doc["spec"]["predictor"]["model"]
            if model["modelFormat"]["name"] == "pytorch":
                assert model["runtime"] in runtimes, path
            else:
                assert model["runtimeVersion"] == "2.21.0", path


def kserve_properties() -> dict[str, str]:
    text = (K8S / "kserve" / "torchserve" / "config" / "config.properties").read_text()
    return dict(line.split("=", 1) for line in text.splitlines()
                if line.strip() and not line.startswith("#"))


def test_kserve_torchserve_config_follows_the_catalog():
    props = kserve_properties()
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["enable_model_api"] == "false"
    assert props["allowed_urls"] == "file:///mnt/models/model-store/[^/]+[.]mar"
    # Issue 11: both APIs on the pod's loopback, management on a port of its own (never the
    # inference port, never the wrapper's 8080/8081); only metrics listen on every interface.
    inference, management = props["inference_address"], props["management_address"]
    assert inference.startswith("http://127.0.0.1:") and management.startswith("http://127.0.0.1:")
    ports = {int(inference.rsplit(":", 1)[1]), int(management.rsplit(":", 1)[1])}
    assert len(ports) == 2 and not ports & {8080, 8081}
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["metrics_address"] == "http://0.0.0.0:8082"
    snapshot = json.loads(props["model_snapshot"])
    models = catalog.for_server("torchserve")
    assert snapshot["modelCount"] == len(models) == len(snapshot["models"])
    for model in models:
        (entry,) = snapshot["models"][model.name].values()
        assert list(snapshot["models"][model.name]) == [model.version]
        ts = model.torchserve
        assert entry == {"defaultVersion": True, "marName": f"{model.name}.mar",
                         "minWorkers": ts.min_workers, "maxWorkers": ts.max_workers,
                         "batchSize": ts.batch_size, "maxBatchDelay": ts.max_batch_delay_ms,
                         "responseTimeout": ts.response_timeout_s}


# --- plain manifests: model-ready probes, resources, images --------------------------------------

def deployments() -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in DOCS if d["kind"] == "Deployment"]


@pytest.mark.parametrize("item", deployments(), ids=_id)
def test_probes_mean_model_ready(item):
    path, doc = item
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    expected = TS_PROBE if "torchserve" in container["image"] else TFS_PROBE
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == expected, (path, probe)
    # Liveness is more patient than readiness: a pod leaves the Service first, restarts later.
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert (live["periodSeconds"] * live["failureThreshold"]
            > ready["periodSeconds"] * ready["failureThreshold"])
    # The startup probe covers the model load (catalog startup timeout, at least).
    startup = container["startupProbe"]
    longest = max(m.torchserve.startup_timeout_s for m in catalog.load().values())
    assert startup["periodSeconds"] * startup["failureThreshold"] >= longest


@pytest.mark.parametrize("item", deployments(), ids=_id)
def test_resources_and_security(item):
    path, doc = item
    pod = doc["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), (path, kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = pod["securityContext"]["runAsUser"]
    assert uid == (1000 if "torchserve" in container["image"] else 10001)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for mount in container["volumeMounts"]:
        if mount["name"] == "model-store":
            assert mount["readOnly"] is True


@pytest.mark.parametrize("item", deployments(), ids=_id)
def test_images_are_the_compose_images(item):
    path, doc = item
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    image = container["image"]
    gpu = path.parent.name == "gpu"
    match = re.fullmatch(r"registry\.example\.com/model-bundle/(torchserve|tfserving):(\S+)", image)
    assert match, image
    tag = match.group(2)
    if match.group(1) == "torchserve":
        assert tag == ("0.12.0-gpu" if gpu else "0.12.0-cpu")
    else:
        assert tag == ("2.21.0-gpu" if gpu else "2.21.0")
    compose = (ROOT / "docker" / "compose.yaml").read_text()
    assert f"image: model-bundle/{match.group(1)}:{tag}" in compose


def test_gpu_variant_requests_gpus():
    gpu = [(p, d) for p, d in deployments() if p.parent.name == "gpu"]
    assert len(gpu) == 2
    for path, doc in gpu:
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        resources = container["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
        tolerations = doc["spec"]["template"]["spec"]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations), path
    for path, doc in deployments():
        if path.parent.name != "gpu":
            assert "nvidia.com/gpu" not in json.dumps(doc), path


def test_every_deployment_has_a_service_hpa_and_network_policy():
    for folder in ("plain", "gpu"):
        docs = [d for p, d in DOCS if p.parent.name == folder]
        for dep in (d for d in docs if d["kind"] == "Deployment"):
            labels = dep["spec"]["template"]["metadata"]["labels"]
            name = dep["metadata"]["name"]
            services = [d for d in docs if d["kind"] == "Service"
                        and d["spec"]["selector"].items() <= labels.items()]
            assert services, f"no Service selects {name}"
            hpa = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"
                   and d["spec"]["scaleTargetRef"]["name"] == name]
            assert hpa and hpa[0]["spec"]["maxReplicas"] > hpa[0]["spec"]["minReplicas"], name
            policies = [d for d in docs if d["kind"] == "NetworkPolicy"
                        and d["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
            assert policies, f"no NetworkPolicy covers {name}"
            # The management API is never exposed beyond the pod.
            for service in services:
                assert 8081 not in [p["port"] for p in service["spec"]["ports"]], name


def test_canary_examples():
    docs = {(d["kind"], d["metadata"]["name"]): (p, d) for p, d in DOCS
            if p.parent.name == "canary"}
    # TF Serving: both versions loaded, labelled stable and canary, for the catalog's model.
    config = docs[("ConfigMap", "tfserving-canary")][1]["data"]["models.config"]
    assert re.search(r'version_labels \{ key: "stable" value: 1 \}', config)
    assert re.search(r'version_labels \{ key: "canary" value: 2 \}', config)
    native = (ROOT / "config" / "tfserving" / "models.config").read_text()
    for base_path in re.findall(r'base_path: "([^"]+)"', config):
        assert f'base_path: "{base_path}"' in native
    # TorchServe: a second track behind the same Service, not caught by the stable selector.
    _, canary = docs[("Deployment", "torchserve-canary")]
    _, stable = next((p, d) for p, d in DOCS if p.parent.name == "plain"
                     and d["kind"] == "Deployment" and d["metadata"]["name"] == "torchserve")
    assert stable["spec"]["selector"]["matchLabels"]["model-bundle/track"] == "stable"
    assert canary["spec"]["selector"]["matchLabels"]["model-bundle/track"] == "canary"
    _, service = next((p, d) for p, d in DOCS if p.parent.name == "plain"
                      and d["kind"] == "Service" and d["metadata"]["name"] == "torchserve")
    for dep in (stable, canary):
        assert service["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"][
            "labels"].items()
    # KServe: traffic split on the InferenceService.
    _, isvc = docs[("InferenceService", "efficientnet-lite0-tf")]
    assert 0 < isvc["spec"]["predictor"]["canaryTrafficPercent"] < 100


# --- issue 11: pod hardening ----------------------------------------------------------------------

def _pod_specs() -> list[tuple[str, dict, list[dict], str]]:
    """(id, pod-level spec, containers, kind) of every workload: Deployments, ISVC predictors and the
    ServingRuntime (whose pod-level fields come from the InferenceService)."""
    specs = []
    for path, doc in DOCS:
        name = f"{path.relative_to(K8S)}:{doc['metadata']['name']}"
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            specs.append((name, pod, pod["containers"], doc["kind"]))
        elif doc["kind"] == "InferenceService":
            specs.append((name, doc["spec"]["predictor"], [], doc["kind"]))
        elif doc["kind"] == "ServingRuntime":
            specs.append((name, doc["spec"], doc["spec"]["containers"], doc["kind"]))
    return specs


@pytest.mark.parametrize("item", [s for s in _pod_specs() if s[3] != "ServingRuntime"],
                         ids=lambda s: s[0])
def test_no_service_account_token_in_pods(item):
    """Deployments and InferenceServices (a ServingRuntime has no such field: its pods take it
    from the InferenceService)."""
    _, pod, _, _ = item
    assert pod["automountServiceAccountToken"] is False


def _emptydir_mounts(pod: dict, container: dict) -> list[str]:
    empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    return [m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty]


@pytest.mark.parametrize("item", [s for s in _pod_specs() if s[2]], ids=lambda s: s[0])
def test_read_only_root_filesystem_with_writable_scratch(item):
    """Root filesystem read-only; the paths the servers write are emptyDirs: /tmp (the JVM's
    perf data, TF's scratch) and, for TorchServe, its run directory (logs, unpacked archives,
    pid file) or, on KServe, TEMP and LOG_LOCATION pointed into /tmp."""
    _, pod, containers, _ = item
    for container in containers:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        writable = _emptydir_mounts(pod, container)
        assert "/tmp" in writable
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        for variable in ("TEMP", "TMPDIR", "LOG_LOCATION", "METRICS_LOCATION"):
            if variable in env:
                assert any(env[variable].startswith(path) for path in writable), variable
        if "torchserve:" in container["image"]:
            assert "/home/model-server/run" in writable


def test_kserve_runtime_seccomp():
    (runtime,) = [d for _, d in DOCS if d["kind"] == "ServingRuntime"]
    (container,) = runtime["spec"]["containers"]
    assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for _, doc in DOCS:
        if doc["kind"] == "InferenceService":
            context = doc["spec"]["predictor"]["securityContext"]
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert context["runAsNonRoot"] is True


def _image_config() -> dict[str, str]:
    """The image's config.properties as docker/torchserve/render_config.py renders it, with the
    bundle path it has inside the image."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_config", ROOT / "docker" / "torchserve" / "render_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.render().replace(str(ROOT), "/home/model-server/bundle")
    return dict(line.split("=", 1) for line in text.splitlines()
                if line.strip() and not line.startswith("#"))


def test_torchserve_management_is_pod_local():
    """The pods run the image's own configuration with the REST and gRPC management APIs bound
    to 127.0.0.1, where the exec probe (healthcheck.py) reaches them."""
    (configmap,) = [d for _, d in DOCS if d["kind"] == "ConfigMap"
                    and d["metadata"]["name"] == "torchserve-config"]
    text = configmap["data"]["config.properties"]
    pod = dict(line.split("=", 1) for line in text.splitlines()
               if line.strip() and not line.startswith("#"))
    expected = {**_image_config(), "management_address": "http://127.0.0.1:8081",
                "grpc_management_address": "127.0.0.1"}
    assert pod == expected, (
        "k8s/plain/torchserve-config.yaml is out of date; its config.properties should be:\n"
        + "\n".join(f"    {k}={v}" for k, v in expected.items()))
    # The exec probe's default address is that loopback one.
    from clients import endpoints

    probe_default = (f"http://{endpoints.LOOPBACK}:"
                     f"{endpoints.TORCHSERVE_PORTS['management']}")
    healthcheck = (ROOT / "docker" / "torchserve" / "healthcheck.py").read_text()
    assert "endpoints.TORCHSERVE_PORTS['management']" in healthcheck
    assert probe_default == pod["management_address"]
    for path, doc in deployments():
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        if "torchserve:" not in container["image"]:
            continue
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        mount = mounts["/home/model-server/config.properties"]
        assert mount["subPath"] == "config.properties" and mount["readOnly"] is True
        volumes = {v["name"]: v for v in doc["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mount["name"]]["configMap"]["name"] == "torchserve-config", path
        ports = [p["containerPort"] for p in container["ports"]]
        assert 8081 not in ports and 7071 not in ports, path
