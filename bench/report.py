"""From raw measurements to medians, aibridge-vs-bare comparisons, goals and Markdown."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

CPU_RATIO_GOAL = 1.6
"""Issue 9 / DESIGN: aibridge's CPU per request at most 1.6x the bare relay's ..."""
CPU_GOAL_MIN_CONCURRENCY = 16
"""... judged where the relay is saturated (c >= 16)."""
P99_GOAL_MS = 2.0
"""At c=1, aibridge's p99 at most 2 ms above the bare relay's."""
SCALING_GOAL = 1.7
SOAK_GROWTH_LIMIT_MIB = 10.0
SOAK_BUDGET_REQUESTS = 100_000

Key = tuple[str, str, str, int]
"""(target, api, mode, concurrency)."""


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (target, api, mode, concurrency) over repeats; errors are summed."""
    groups: dict[Key, list[dict[str, Any]]] = {}
    for cell in cells:
        key = (cell["target"], cell["api"], cell["mode"], cell["concurrency"])
        groups.setdefault(key, []).append(cell)
    out = []
    for (target, api, mode, conc), runs in groups.items():
        errors = sum(r["errors"] for r in runs)
        out.append(
            {
                "target": target,
                "api": api,
                "mode": mode,
                "concurrency": conc,
                "runs": len(runs),
                "requests": sum(r["requests"] for r in runs),
                "rps": _median(r["rps"] for r in runs),
                "cpu_us_per_request": _median(r.get("cpu_us_per_request") for r in runs),
                "p50_ms": _median(r["p50_ms"] for r in runs),
                "p99_ms": _median(r["p99_ms"] for r in runs),
                "errors": errors,
                "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
            }
        )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _diff(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def compare(summary: list[dict[str, Any]], gateways: list[str]) -> list[dict[str, Any]]:
    """One row per (gateway target, api, mode, c): the gateway against the bare relay,
    with the issue's goals judged where they apply."""
    by_key = {(s["target"], s["api"], s["mode"], s["concurrency"]): s for s in summary}
    rows = []
    for s in summary:
        if s["target"] not in gateways:
            continue
        bare = by_key.get(("bare", s["api"], s["mode"], s["concurrency"]))
        if bare is None:
            continue
        row: dict[str, Any] = {
            "target": s["target"],
            "api": s["api"],
            "mode": s["mode"],
            "concurrency": s["concurrency"],
            "bare_rps": bare["rps"],
            "rps": s["rps"],
            "throughput_ratio": _ratio(s["rps"], bare["rps"]),
            "bare_cpu_us": bare["cpu_us_per_request"],
            "cpu_us": s["cpu_us_per_request"],
            "cpu_ratio": _ratio(s["cpu_us_per_request"], bare["cpu_us_per_request"]),
            "bare_p50_ms": bare["p50_ms"],
            "bare_p99_ms": bare["p99_ms"],
            "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"],
            "added_p50_ms": _diff(s["p50_ms"], bare["p50_ms"]),
            "added_p99_ms": _diff(s["p99_ms"], bare["p99_ms"]),
            "errors": s["errors"] + bare["errors"],
        }
        row["goals"] = _goals(row)
        rows.append(row)
    return rows


def _goals(row: dict[str, Any]) -> dict[str, bool]:
    """The issue's goals that apply to this row: name -> met."""
    goals: dict[str, bool] = {}
    if row["concurrency"] >= CPU_GOAL_MIN_CONCURRENCY:
        ratio = row["cpu_ratio"]
        goals["cpu"] = ratio is not None and ratio <= CPU_RATIO_GOAL
    if row["concurrency"] == 1:
        added = row["added_p99_ms"]
        goals["p99"] = added is not None and added <= P99_GOAL_MS
    return goals


def verdict(row: dict[str, Any]) -> str:
    """``pass``, ``FAIL: …`` or ``-`` (no goal at this concurrency) for a compare row."""
    failed = []
    if not row["goals"].get("cpu", True):
        failed.append(f"CPU {row['cpu_ratio'] or float('nan'):.2f}x > {CPU_RATIO_GOAL}")
    if not row["goals"].get("p99", True):
        failed.append(f"p99 +{row['added_p99_ms'] or float('nan'):.2f} ms > {P99_GOAL_MS}")
    if row["errors"]:
        failed.append(f"{row['errors']} errors")
    if failed:
        return "FAIL: " + ", ".join(failed)
    return "pass" if row["goals"] else "-"


def scaling(summary: list[dict[str, Any]], one: str, many: str) -> list[dict[str, Any]]:
    """``many`` workers against ``one`` worker, per cell."""
    by_key = {(s["target"], s["api"], s["mode"], s["concurrency"]): s for s in summary}
    rows = []
    for s in summary:
        if s["target"] != many:
            continue
        base = by_key.get((one, s["api"], s["mode"], s["concurrency"]))
        if base is None:
            continue
        rows.append(
            {
                "api": s["api"],
                "mode": s["mode"],
                "concurrency": s["concurrency"],
                "one_rps": base["rps"],
                "many_rps": s["rps"],
                "scaling": _ratio(s["rps"], base["rps"]),
                "one_cpu_us": base["cpu_us_per_request"],
                "many_cpu_us": s["cpu_us_per_request"],
                "errors": s["errors"] + base["errors"],
            }
        )
    return rows


# ------------------------------------------------------------------------------ rendering


def _n(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def render_compare(rows: list[dict[str, Any]]) -> list[str]:
    """The aibridge-vs-bare table."""
    lines = [
        "| API | mode | c | target | bare req/s | req/s | thr. ratio | bare CPU µs/req "
        "| CPU µs/req | CPU ratio | bare p50 / p99 ms | p50 / p99 ms | added p50 / p99 ms "
        "| goal |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['api']} | {r['mode']} | {r['concurrency']} | {r['target']} "
            f"| {_n(r['bare_rps'])} | {_n(r['rps'])} | {_n(r['throughput_ratio'], '.2f')} "
            f"| {_n(r['bare_cpu_us'])} | {_n(r['cpu_us'])} | {_n(r['cpu_ratio'], '.2f')} "
            f"| {_ms(r['bare_p50_ms'])} / {_ms(r['bare_p99_ms'])} "
            f"| {_ms(r['p50_ms'])} / {_ms(r['p99_ms'])} "
            f"| {_signed(r['added_p50_ms'])} / {_signed(r['added_p99_ms'])} | {verdict(r)} |"
        )
    return lines


def render_targets(summary: list[dict[str, Any]]) -> list[str]:
    """Every target's medians (direct included), cells with errors marked."""
    lines = [
        "| target | API | mode | c | runs | requests | req/s | CPU µs/req | p50 ms | p99 ms "
        "| errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in summary:
        detail = " ".join(str(s["first_error"]).split()).replace("|", "\\|")
        errors = "0" if not s["errors"] else f"**{s['errors']}** ({detail})"
        lines.append(
            f"| {s['target']} | {s['api']} | {s['mode']} | {s['concurrency']} | {s['runs']} "
            f"| {s['requests']:,} | {_n(s['rps'])} | {_n(s['cpu_us_per_request'])} "
            f"| {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | {errors} |"
        )
    return lines


def render_ttfb(ttfb: list[dict[str, Any]]) -> list[str]:
    """Time to first body byte of streams at c=1 (Python client), added over bare."""
    bare = {t["api"]: t for t in ttfb if t["target"] == "bare"}
    lines = [
        "| API | target | TTFB p50 ms | TTFB p99 ms | added p50 over bare | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for t in ttfb:
        base = bare.get(t["api"])
        added = None
        if base is not None and t["target"] not in ("bare", "direct"):
            added = _diff(t["ttfb_p50_ms"], base["ttfb_p50_ms"])
        lines.append(
            f"| {t['api']} | {t['target']} | {_ms(t['ttfb_p50_ms'])} | {_ms(t['ttfb_p99_ms'])} "
            f"| {_signed(added)} | {t['errors']} |"
        )
    return lines


def render_scaling(rows: list[dict[str, Any]], workers: int) -> list[str]:
    """Workers N against one worker."""
    lines = [
        f"| API | mode | c | 1 worker req/s | {workers} workers req/s | scaling "
        f"| 1 worker CPU µs/req | {workers} workers CPU µs/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['api']} | {r['mode']} | {r['concurrency']} | {_n(r['one_rps'])} "
            f"| {_n(r['many_rps'])} | {_n(r['scaling'], '.2f')}x | {_n(r['one_cpu_us'])} "
            f"| {_n(r['many_cpu_us'])} | {r['errors']} |"
        )
    return lines


def render_goals(rows: list[dict[str, Any]]) -> list[str]:
    """One line per goal kind: how many cells pass."""
    lines = []
    for goal, text in (
        ("cpu", f"CPU µs/req ≤ {CPU_RATIO_GOAL}x bare at c ≥ {CPU_GOAL_MIN_CONCURRENCY}"),
        ("p99", f"p99 ≤ bare + {P99_GOAL_MS} ms at c=1"),
    ):
        for target in dict.fromkeys(r["target"] for r in rows):
            judged = [r for r in rows if r["target"] == target and goal in r["goals"]]
            if not judged:
                continue
            passed = [r for r in judged if r["goals"][goal] and not r["errors"]]
            state = "PASS" if len(passed) == len(judged) else "FAIL"
            lines.append(f"- {state} {target}: {text}: {len(passed)}/{len(judged)} cells")
    return lines


def render_memory(memory: dict[str, Any]) -> str:
    """The RSS line (warm-up, cells, soak)."""
    if not memory:
        return "Gateway RSS: not measured."
    text = (
        f"Gateway RSS: {memory['rss_after_warmup_mib']} MiB after warm-up, "
        f"{memory['rss_after_cells_mib']} MiB after the cells"
    )
    if "rss_after_soak_mib" in memory:
        text += (
            f", {memory['rss_after_soak_mib']} MiB after a soak of {memory['soak_requests']:,} "
            f"requests at c=64 (growth {memory['soak_growth_mib']:+.1f} MiB: "
            f"{'flat' if memory['flat'] else 'NOT flat'}, limit {SOAK_GROWTH_LIMIT_MIB} MiB)"
        )
        if memory["soak_requests"] < SOAK_BUDGET_REQUESTS:
            text += (
                f". DESIGN asks flat over {SOAK_BUDGET_REQUESTS:,} requests: a longer --soak "
                "covers that"
            )
    return text + "."


def render(doc: dict[str, Any]) -> str:
    """The whole Markdown report (header, tables, goals, notes)."""
    gen = doc["generator"]
    out = [render_header(doc), ""]
    out.append(f"### aibridge vs bare relay (load generator: {gen}; medians)")
    out.append("")
    out += render_compare(doc["rows"])
    out.append("")
    out.append("Goals (issue 9):")
    out += render_goals(doc["rows"])
    out.append("")
    out.append(f"### Every target (load generator: {gen}; medians)")
    out.append("")
    out += render_targets(doc["summary"])
    if doc.get("ttfb"):
        out += ["", "### Stream TTFB at c=1 (load generator: Python aiohttp client)", ""]
        out += render_ttfb(doc["ttfb"])
    if doc.get("scaling"):
        workers = doc["plan"]["workers"]
        out += ["", f"### --workers {workers} (load generator: {gen}; medians)", ""]
        out += render_scaling(doc["scaling"], workers)
    out += ["", render_memory(doc["memory"])]
    for note in doc.get("notes", []):
        out += ["", f"Note: {note}"]
    return "\n".join(out)


def render_header(doc: dict[str, Any]) -> str:
    """Machine, placement, generator, database, sources and plan."""
    m, p, load = doc["machine"], doc["plan"], doc["load_average"]
    busy = max(load["before"][0], load["after"][0]) > 0.5 * (m["nproc"] or 1)
    lines = [
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Python {m['python']}",
        f"placement: {m['pinning']}",
        f"load generator: {doc['generator']}",
        "database: "
        + (
            f"PostgreSQL on {p['postgres_url']} (a temporary database per gateway, dropped after)"
            if p["db"] == "postgres"
            else "SQLite file in a temporary data dir per gateway"
        ),
        f"gateway log level: {p.get('log_level', 'warning')}"
        + (" (one access line per request)" if p.get("log_level") in ("debug", "info") else ""),
        "targets: " + "; ".join(f"{t['name']} ({t['describe']})" for t in doc["targets"]),
        f"cells: {p['duration']} s each after {p['warmup']} s warm-up, repeat {p['repeat']}"
        + (" interleaved" if p["interleave"] else "")
        + "; streams: openai 20 chunks + usage + [DONE], anthropic 50 events",
        f"load average (1 min) before/after: {load['before'][0]:.2f}/{load['after'][0]:.2f}"
        + (" - WARNING: other load on this machine; wall-clock numbers are unreliable" * busy),
    ]
    return "\n".join(lines)
