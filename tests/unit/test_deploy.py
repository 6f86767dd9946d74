"""The deployment files agree with the code: commands, options, ports, probes, metrics.

There is no container engine or cluster here, so the files are checked for what
can be checked: they parse, every command they run exists with those options,
the config they mount validates, probes hit real open routes on the real port,
and every metric the dashboard plots is one the server exports.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

from tuneforge.cli.main import app as cli_app
from tuneforge.config.serve_schema import ServeConfig
from tuneforge.serve.app import OPEN_ROUTES

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = sorted((DEPLOY / "k8s").rglob("*.yaml"))
SERVE_PORT = ServeConfig().port


def k8s_objects() -> list[dict]:
    return [doc for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def check_tuneforge_command(words: list[str]) -> None:
    """``tuneforge serve ...``: the command and every option exist in the real CLI."""
    assert words[:2] == ["tuneforge", "serve"], words
    command = typer.main.get_command(cli_app).commands["serve"]
    options = {name for param in command.params for name in getattr(param, "opts", [])}
    for word in words[2:]:
        if word.startswith("-"):
            assert word in options, (word, sorted(options))


def test_dockerfiles_run_the_real_server_on_its_port() -> None:
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DEPLOY / "docker" / name).read_text()
        cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
        check_tuneforge_command(cmd)
        assert cmd[cmd.index("--port") + 1] == str(SERVE_PORT)
        assert f"EXPOSE {SERVE_PORT}" in text
        assert "/health" in text and "torch==2.13.0" in text
        for source in re.findall(r"^COPY (\S+) ", text, re.M):
            assert (REPO / source).exists(), source
        assert 'pip install ".[service]"' in text  # serve, and the jobs service + workers
    entry = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    assert "tuneforge serve" in entry and "--port 8080" in entry  # SageMaker's port


def test_compose_wires_server_redis_prometheus_grafana() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"tuneforge", "redis", "prometheus", "grafana"}
    command = services["tuneforge"]["command"]
    check_tuneforge_command(command)
    redis_url = command[command.index("--set") + 1].split("=", 1)[1]
    ServeConfig.model_validate({"cache": {"redis_url": redis_url}})
    assert redis_url.startswith("redis://redis:6379")
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    job = prometheus["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"tuneforge:{SERVE_PORT}"]
    for mount in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        source = mount.split(":")[0]
        assert (DEPLOY / "compose" / source).exists(), source


def test_the_dashboard_plots_only_metrics_the_server_exports(tmp_path: Path) -> None:
    from tuneforge.serve.metrics import ServerMetrics

    dashboard = json.loads((DEPLOY / "compose/grafana/dashboards/tuneforge.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"tuneforge_[a-z_]+", e)}
    metrics = ServerMetrics()
    metrics.watch("engine", "engine", lambda: dict.fromkeys(ENGINE_GAUGES, 0))
    metrics.watch("cache", "cache", lambda: {"hits_total": 0, "misses_total": 0})
    metrics.watch_labelled("guardrail_actions", "g", ["side", "policy", "action"], lambda: {})
    metrics.requests.labels("/v1/chat/completions", "m", "200").inc()
    metrics.latency.labels("/v1/chat/completions", "m").observe(0.1)
    metrics.first_token.labels("m").observe(0.1)
    metrics.per_token.labels("m").observe(0.01)
    metrics.tokens.labels("m", "prompt").inc()
    exported = set(re.findall(r"^(tuneforge_[a-z_]+)", metrics.exposition()[0].decode(), re.M))
    exported |= {"tuneforge_guardrail_actions_total"}  # a counter with no samples yet
    assert used <= exported, used - exported


ENGINE_GAUGES = ("queue_depth", "running", "loaded_adapters", "batch_size_last")


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_k8s_objects_are_complete(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc.get("kind")
        assert doc["metadata"]["name"]
        if doc["kind"] == "Deployment":
            spec = doc["spec"]
            assert (
                spec["selector"]["matchLabels"].items()
                <= spec["template"]["metadata"]["labels"].items()
            )
            for container in spec["template"]["spec"]["containers"]:
                assert "requests" in container["resources"], container["name"]


def test_tuneforge_pods_probe_open_routes_and_mount_valid_config() -> None:
    objects = k8s_objects()
    maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    fronts = [
        c
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
        if c["args"][:2] == ["tuneforge", "serve"]
    ]
    assert len(fronts) == 2
    for container in fronts:
        check_tuneforge_command(container["args"])
        assert container["ports"][0]["containerPort"] == SERVE_PORT
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] in OPEN_ROUTES
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert {ref["secretRef"]["name"] for ref in container["envFrom"]} <= secrets
    for config_map in maps.values():
        settings = ServeConfig.model_validate(
            yaml.safe_load(config_map["data"]["serve.yaml"])["serve"]
        )
        assert settings.port == SERVE_PORT and settings.host == "0.0.0.0"
    secret = next(o for o in objects if o["kind"] == "Secret")
    assert "TUNEFORGE_API_KEYS" in secret["stringData"]
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] in {
        o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"
    }


def test_graceful_shutdown_outlasts_the_request_timeout() -> None:
    for doc in k8s_objects():
        if doc["kind"] == "Deployment" and "tuneforge" in doc["metadata"]["name"]:
            pod = doc["spec"]["template"]["spec"]
            if pod["containers"][0]["args"][:2] == ["tuneforge", "serve"]:
                timeout = ServeConfig().request_timeout_s
                assert pod["terminationGracePeriodSeconds"] > timeout


def test_vllm_variant_serves_what_the_front_forwards() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s/vllm/tuneforge-vllm.yaml").read_text()))
    vllm = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm")
    container = vllm["spec"]["template"]["spec"]["containers"][0]
    args = shlex.join(container["args"])
    assert "--enable-lora" in args and container["resources"]["limits"]["nvidia.com/gpu"] == 1
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    settings = ServeConfig.model_validate(yaml.safe_load(config["data"]["serve.yaml"])["serve"])
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "vllm")
    assert settings.backend == "vllm"
    assert settings.upstream_url == f"http://vllm:{service['spec']['ports'][0]['port']}"


def test_the_mounted_serve_file_is_what_tuneforge_serve_reads(tmp_path: Path) -> None:
    """A file with only a ``serve:`` section works as --config; --set applies on top."""
    from tuneforge.cli.serve_cmd import _settings
    from tuneforge.errors import ConfigError

    for config_map in (o for o in k8s_objects() if o["kind"] == "ConfigMap"):
        mounted = tmp_path / "serve.yaml"
        mounted.write_text(config_map["data"]["serve.yaml"])
        settings = _settings(mounted, tmp_path, ["serve.max_queue=7"])
        assert settings.max_queue == 7 and settings.cache.redis_url.startswith("redis://")
    (tmp_path / "bad.yaml").write_text("serve:\n  max_batch: 0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: serve\.max_batch"):
        _settings(tmp_path / "bad.yaml", tmp_path, [])


WORKER_JOB = DEPLOY / "k8s" / "finetune-worker-job.yaml"
WORKER_COMMAND = [
    "tuneforge",
    "service",
    "worker",
    "/config/service.yaml",
    "--once",
    "--set",
    "service.root=/srv/tuneforge/service",
]


def worker_job() -> tuple[dict, dict, dict]:
    """The worker Job, its pod spec and its one container."""
    (job,) = [doc for doc in yaml.safe_load_all(WORKER_JOB.read_text()) if doc]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return job, pod, container


def test_finetune_worker_job_trains_one_queued_job_per_gpu_pod() -> None:
    job, pod, container = worker_job()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["parallelism"] == spec["completions"] == 1
    assert spec["backoffLimit"] == 2  # a retried pod resumes from the job's last checkpoint
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] >= 3600
    assert pod["restartPolicy"] == "Never"
    assert container["image"] == "tuneforge:cuda"
    assert container["command"] == WORKER_COMMAND
    worker = typer.main.get_command(cli_app).commands["service"].commands["worker"]
    options = {name for param in worker.params for name in getattr(param, "opts", [])}
    assert {"--once", "--set"} <= options  # the real CLI takes them
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert WORKER_COMMAND[-1].split("=")[1].startswith(mounts["service-root"] + "/")
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert (
        job["metadata"]["labels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    )


def test_finetune_worker_reads_the_shared_queue_and_mounts_config_and_service_root() -> None:
    _, pod, container = worker_job()
    env = {item["name"]: item for item in container["env"]}
    secret = env["TUNEFORGE_SERVICE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "tuneforge-service", "key": "database-url"}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert {mount["name"] for mount in mounts.values()} == set(volumes)
    config = mounts["/config"]
    assert volumes[config["name"]]["configMap"]["name"] == "tuneforge-service-config"
    assert config["readOnly"] is True
    assert Path(WORKER_COMMAND[3]).parent == Path(config["mountPath"])
    root = mounts["/srv/tuneforge"]
    assert volumes[root["name"]]["persistentVolumeClaim"]["claimName"] == "tuneforge-service-root"
    assert not root.get("readOnly", False)  # workers write runs and adapters there


def test_finetune_worker_runs_unprivileged_with_only_scratch_space_writable() -> None:
    _, pod, container = worker_job()
    dockerfile = (DEPLOY / "docker" / "Dockerfile.cuda").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+) tuneforge", dockerfile).group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    home = next(item["value"] for item in container["env"] if item["name"] == "HOME")
    for path in ("/tmp", home):
        assert "emptyDir" in volumes[mounts[path]], path


def test_the_documented_recipe_for_many_workers_gives_each_job_a_fresh_name() -> None:
    """The header's sed line turns the fixed name into a generateName for `kubectl create`."""
    text = WORKER_JOB.read_text()
    pattern, replacement = re.search(r"sed 's/(.+?)/(.+?)/'", text).groups()
    pattern = pattern.replace(r"\(", "(").replace(r"\)", ")")
    renamed, count = re.subn(pattern, replacement, text, flags=re.M)
    assert count == 1
    (job,) = [doc for doc in yaml.safe_load_all(renamed) if doc]
    assert "name" not in job["metadata"]
    assert job["metadata"]["generateName"] == "tuneforge-finetune-worker-"
