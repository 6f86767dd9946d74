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
        assert 'pip install ".[serve]"' in text
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
