"""Lab-2.4's deployment files (deploy/: Dockerfile, docker-compose.yml, prometheus.yml, nginx.conf, k8s/),
checked statically: CI has no docker and no cluster, so nothing here builds or applies them. What is checked
is what breaks a deployment silently: probes on a path the server does not serve, an API key written into a
manifest, a root user, ports that disagree between the files, containers without resource limits.

hadolint and kubeconform are not installed in the course environment; the lab's 04 notebook runs them when
they are on PATH."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "02-Efficient_Inference_and_Serving" / "02-Labs" / "Lab-2.4-FastAPI_Service" / "deploy"
SERVER_PORT = 8000  # the server's default (Settings.port); it binds 127.0.0.1 only
KEY_ENV = "COURSE_API_KEY"


def _yaml(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def _dockerfile() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [re.sub(r"\s+", " ", part).strip() for part in "\n".join(lines).replace("\\\n", " ").splitlines()
            if part.strip()]


def _nginx_listen_port() -> int:
    return int(re.search(r"^\s*listen\s+(\d+);", (DEPLOY / "nginx.conf").read_text(), re.M).group(1))


def _server_routes() -> set[str]:
    from common_utils.inference.server import ROUTES

    return set(ROUTES)


def _deployment() -> dict:
    return _yaml("k8s/deployment.yaml")


def _containers() -> dict[str, dict]:
    return {c["name"]: c for c in _deployment()["spec"]["template"]["spec"]["containers"]}


# ---- Dockerfile -----------------------------------------------------------------------------------
def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [line.split(None, 1)[1] for line in _dockerfile() if line.upper().startswith("USER ")]
    assert users, "the Dockerfile must switch to an unprivileged USER"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"the final USER is {users[-1]!r}: run as non-root"


def test_dockerfile_provisions_the_model_at_build_time_and_checks_health() -> None:
    lines = _dockerfile()
    runs = " ".join(line for line in lines if line.startswith("RUN "))
    assert "python -m common_utils provision" in runs, "provision the model in a RUN step (build time)"
    healthcheck = next((line for line in lines if line.startswith("HEALTHCHECK ")), "")
    assert "/health" in healthcheck and "/health" in _server_routes(), healthcheck
    env = " ".join(line for line in lines if line.startswith("ENV "))
    assert f"PORT={SERVER_PORT}" in env, "the container's PORT must be the port nginx.conf proxies to"
    assert "HF_HUB_OFFLINE=1" in env, "the container must start offline (the model is baked in)"
    assert KEY_ENV not in env, f"{KEY_ENV} must come from the run-time environment, not the image"


# ---- reverse proxy ---------------------------------------------------------------------------------
def test_nginx_proxies_to_the_loopback_server_without_buffering_streams() -> None:
    conf = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    assert f"proxy_pass http://127.0.0.1:{SERVER_PORT};" in conf
    assert "proxy_buffering off;" in conf, "SSE events must not be buffered by the proxy"
    assert re.search(r"location = /metrics \{[^}]*deny all;", conf), "/metrics must be reachable internally only"


# ---- docker compose + Prometheus -------------------------------------------------------------------
def test_compose_has_server_proxy_and_prometheus_with_agreeing_ports() -> None:
    services = _yaml("docker-compose.yml")["services"]
    assert {"server", "proxy", "prometheus"} <= set(services)
    proxy_port = _nginx_listen_port()
    assert services["proxy"]["network_mode"] == "service:server", "the proxy must share the server's loopback"
    published = [str(p) for p in services["server"]["ports"]]
    assert any(p.endswith(f":{proxy_port}") for p in published), published
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in map(str, s.get("ports", []))), \
        "publish on the host's loopback only"
    environment = services["server"]["environment"]
    assert str(environment["PORT"]) == str(SERVER_PORT)
    assert re.fullmatch(r"\$\{" + KEY_ENV + r"(:\?[^}]*)?\}", environment[KEY_ENV]), \
        f"{KEY_ENV} must be taken from the environment (${{{KEY_ENV}:?...}}), not written in the file"
    targets = [t for job in _yaml("prometheus.yml")["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]
    assert targets == [f"server:{proxy_port}"], targets
    assert _yaml("prometheus.yml")["scrape_configs"][0]["metrics_path"] in _server_routes()


# ---- Kubernetes ------------------------------------------------------------------------------------
def test_k8s_probes_hit_server_routes_through_the_proxy_port() -> None:
    containers = _containers()
    proxy = containers["proxy"]
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports["http"] == _nginx_listen_port()
    for kind in ("readinessProbe", "livenessProbe"):
        probe = proxy[kind]["httpGet"]
        assert probe["path"] in _server_routes(), f"{kind} path {probe['path']} is not a server route"
        assert probe["port"] in ("http", ports["http"])
    annotations = _deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in _server_routes()
    assert int(annotations["prometheus.io/port"]) == ports["http"]


def test_k8s_api_key_comes_from_a_secret_not_a_literal() -> None:
    env = {e["name"]: e for e in _containers()["server"]["env"]}
    key = env[KEY_ENV]
    assert "value" not in key, f"{KEY_ENV} is written into the manifest: use valueFrom.secretKeyRef"
    assert set(key["valueFrom"]["secretKeyRef"]) >= {"name", "key"}
    assert env["PORT"]["value"] == str(SERVER_PORT)


def test_k8s_containers_have_requests_limits_and_run_as_non_root() -> None:
    spec = _deployment()["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for name, container in _containers().items():
        resources = container["resources"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[part]), f"{name}: set resources.{part} cpu and memory"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"].get("runAsUser", spec["securityContext"]["runAsUser"]) != 0, name


def test_k8s_service_targets_the_proxy_port() -> None:
    service = _yaml("k8s/service.yaml")
    assert service["spec"]["selector"] == _deployment()["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"]["type"] == "ClusterIP", "expose through an ingress with TLS, not a NodePort"
