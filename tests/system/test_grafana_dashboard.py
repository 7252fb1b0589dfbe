"""The Grafana dashboard queries only series a running gateway exposes on ``/metrics``,
grouped by labels those series carry: a renamed metric or label breaks this test, not a
panel nobody looks at."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from aibridge.fakellm import Scenario
from aibridge.testing.stack import TIMEOUT, stack

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "aibridge.json"
METRIC = re.compile(r"\baibridge_[a-z0-9_]+\b")
BY = re.compile(r"\bby \(([^)]*)\)")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def expressions(node: Any) -> list[str]:
    """Every PromQL expression in the dashboard (panel targets and variable queries)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(expressions(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(expressions(item))
    return found


def exposed(text: str) -> dict[str, set[str] | None]:
    """Series name → the label names its samples carry (None: no sample yet)."""
    series: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(text):
        names = [family.name + s for s in SUFFIXES.get(family.type, ("",))]
        for name in names:
            series.setdefault(name, None)
        for sample in family.samples:
            labels = series.get(sample.name) or set()
            series[sample.name] = labels | (set(sample.labels) - {"le"})
    return series


async def test_every_series_the_dashboard_queries_exists(sqlite_url: str, tmp_path: Path) -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exprs = expressions(dashboard)
    assert len(exprs) >= 20
    async with stack(sqlite_url, tmp_path) as s:
        # A breaker and one request give the per-provider series their samples.
        await s.add_provider("oa", "openai", settings={"circuit_breaker": {"enabled": True}})
        s.fake.enqueue(Scenario.text_reply("hi"))
        async with asyncio.timeout(TIMEOUT):
            resp = await s.client.post(
                "/oa/v1/chat/completions",
                json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]},
                headers={"Authorization": f"Bearer {s.user_token}"},
            )
            assert resp.status == 200, await resp.text()
            metrics = await s.client.get("/metrics", headers=s.admin_headers())
            assert metrics.status == 200
            series = exposed(await metrics.text())
    queried = {name for expr in exprs for name in METRIC.findall(expr)}
    missing = sorted(queried - series.keys())
    assert not missing, f"the dashboard queries series /metrics does not have: {missing}"
    # Every topic the dashboard promises has a panel.
    for wanted in (
        "aibridge_interceptions_total",
        "aibridge_interception_duration_seconds_bucket",
        "aibridge_tokens_total",
        "aibridge_key_pool_state",
        "aibridge_circuit_breaker_state",
        "aibridge_recorder_queue_depth",
        "aibridge_provider_reload_last_success_timestamp_seconds",
        "aibridge_limit_refusals_total",
    ):
        assert wanted in queried, wanted
    # Grouping labels exist on the series grouped (where it has samples to show them).
    checked = 0
    for expr in exprs:
        names = set(METRIC.findall(expr))
        for grouped in BY.findall(expr):
            labels = {g.strip() for g in grouped.split(",")} - {"le"}
            for name in names:
                carried = series[name]
                if carried is not None and carried:
                    assert labels <= carried, (expr, name, carried)
                    checked += 1
    assert checked >= 10
