"""Lab-2.7's monitoring files (alert rules, Prometheus scrape config, Grafana dashboard): they parse, every
metric name their expressions use exists (the course server's names in its real /metrics registry; vLLM's in
the installed vLLM's source), and, where Debian's `promtool` is installed (`apt-get install prometheus`),
`promtool check rules/config` pass and each alert fires on a bad synthetic series and stays silent on a
healthy one (`promtool test rules monitoring/alerts_test.yml`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytest.importorskip("prometheus_client", reason="the course server's metrics need the `serve` extra")

from common_utils.inference.engines import engine_venv  # noqa: E402
from common_utils.inference.server_metrics import ServerMetrics  # noqa: E402
from common_utils.inference.service_client import parse_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MONITORING = (ROOT / "02-Efficient_Inference_and_Serving" / "02-Labs" /
              "Lab-2.7-Performance_Monitoring_and_Load_Testing" / "monitoring")
CHAT_ROUTE = "/v1/chat/completions"
PROMQL_FUNCTIONS = {"histogram_quantile", "sum", "rate", "by", "le", "increase", "avg", "max", "min"}
METRIC = re.compile(r"(?<![\w:\"])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[)])")


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
            for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana_dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers followed by `{`, `[` or `)`, minus functions."""
    return {name for name in METRIC.findall(expr) if name not in PROMQL_FUNCTIONS and not name.startswith("$")}


def course_series_names() -> set[str]:
    """Every sample name the course server's registry exposes once each labelled metric has one child."""
    metrics = ServerMetrics()
    metrics.requests.labels(CHAT_ROUTE, "200").inc()
    metrics.duration.labels(CHAT_ROUTE).observe(0.1)
    return {s.name for family in parse_metrics(metrics.exposition().decode()).values() for s in family.samples}


def all_exprs() -> list[str]:
    return [rule["expr"] for rule in alert_rules()] + dashboard_exprs()


def test_files_parse_and_name_what_the_lab_promises() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"CourseServerTTFTP95High", "CourseServerErrorRateHigh", "VLLMTTFTP95High", "VLLMErrorRateHigh"} <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"], rule["alert"]
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets and all(t.startswith("127.0.0.1:") for t in targets), "scrape loopback targets only"
    assert config["rule_files"] == ["alerts.yml"]
    titles = " ".join(p["title"] for p in json.loads((MONITORING / "grafana_dashboard.json").read_text())["panels"])
    for needed in ("TTFT", "Inter-token", "tokens per second", "Queue depth", "Error rate"):
        assert needed in titles, f"the dashboard needs a {needed!r} panel"


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m]))) > 2'
    assert metric_names(expr) == {"vllm:time_to_first_token_seconds_bucket"}
    assert metric_names('sum(rate(a_total{route="/x", status=~"5.."}[5m])) / sum(b)') == {"a_total", "b"}


def test_course_server_names_exist_in_its_metrics() -> None:
    exposed = course_series_names()
    used = {name for expr in all_exprs() for name in metric_names(expr) if name.startswith("course_server_")}
    assert len(used) >= 6, used
    missing = used - exposed
    assert not missing, f"not exposed by the course server's /metrics: {sorted(missing)}; exposed: {sorted(exposed)}"


def test_course_server_route_label_matches_the_server() -> None:
    from common_utils.inference.server import ROUTES

    routes = {m for expr in all_exprs() for m in re.findall(r'route="([^"]+)"', expr)}
    assert routes and routes <= set(ROUTES), routes


def test_vllm_names_exist_in_the_installed_vllm() -> None:
    sources = sorted(engine_venv("vllm").glob("lib/python*/site-packages/vllm/v1/metrics/loggers.py"))
    if not sources:
        pytest.skip("vLLM's venv is not installed (`make engines`): its metric names cannot be checked")
    text = sources[0].read_text(encoding="utf-8")
    used = {name for expr in all_exprs() for name in metric_names(expr) if name.startswith("vllm:")}
    assert used
    for name in used:
        base = re.sub(r"(_bucket|_sum|_count|_total)$", "", name)
        assert f'"{base}"' in text, f"{name}: vLLM defines no metric {base!r} in {sources[0]}"


def test_every_alert_has_a_firing_and_a_silent_promtool_case() -> None:
    cases = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    for rule in alert_rules():
        checks = [c for case in cases for c in case["alert_rule_test"] if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in checks), f"{rule['alert']}: no case where it fires"
        assert any(not c["exp_alerts"] for c in checks), f"{rule['alert']}: no healthy case where it stays silent"


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install -y prometheus)")
@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"],
                                  ["test", "rules", "alerts_test.yml"]], ids=["check-rules", "check-config", "test-rules"])
def test_promtool(args: list[str]) -> None:
    result = subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
