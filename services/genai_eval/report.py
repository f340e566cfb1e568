"""Write an eval run as report.md (metrics, bars, gates), results.json and dump.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from genai_eval.bars import BARS, GATES, verdicts
from genai_eval.features import FEATURES, Outcome


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) and not value.is_integer() else f"{value:g}"


def _mark(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def bars_table(metrics: dict[str, float]) -> list[str]:
    """The issue's bar table with this run's values, each bar and gate marked pass or fail."""
    lines = ["| feature | metric | value | bar | | gate | |", "|---|---|---|---|---|---|---|"]
    for (bar, value, bar_ok), (gate, _, gate_ok) in zip(
        verdicts(metrics, BARS), verdicts(metrics, GATES), strict=True
    ):
        feature = bar.metric.split(".", 1)[0]
        lines.append(
            f"| {feature} | {bar.label} | {_fmt(value)} | {bar.op} {_fmt(bar.value)} "
            f"| {_mark(bar_ok)} "
            f"| {gate.op} {_fmt(gate.value)} | {_mark(gate_ok)} |"
        )
    return lines


def write(out: Path, results: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write report.md, results.json and dump.md into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = results["outcomes"]
    md = [
        "# genai eval",
        "",
        f"Command: `{meta['command']}`",
        "",
        *([f"Judged again: `{meta['rejudged']}`", ""] if meta.get("rejudged") else []),
        f"Server: {meta['server']}; concurrency {meta['concurrency']}; wall time per feature: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in results["wall_s"].items()),
        "",
    ]
    for split, r in results["splits"].items():
        metrics = r["metrics"]
        md += [f"## Split `{split}`", "", *bars_table(metrics), ""]
        md += ["All metrics:", "", "| metric | value |", "|---|---|"]
        md += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
        if r["errors_by_code"]:
            md += [
                "",
                "Calls ending in an error status: "
                + ", ".join(f"{k} × {n}" for k, n in sorted(r["errors_by_code"].items())),
            ]
        md.append("")
    (out / "report.md").write_text("\n".join(md))
    payload = {
        "meta": meta,
        "wall_s": results["wall_s"],
        "splits": {
            s: {
                **r,
                "bars": _verdict_rows(r["metrics"], BARS),
                "gates": _verdict_rows(r["metrics"], GATES),
            }
            for s, r in results["splits"].items()
        },
        "cases": [_record(o) for o in outcomes],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False))
    (out / "dump.md").write_text(_dump(outcomes))


def _verdict_rows(metrics: dict[str, float], thresholds: Any) -> list[dict[str, Any]]:
    return [
        {"metric": t.metric, "op": t.op, "threshold": t.value, "value": v, "pass": ok}
        for t, v, ok in verdicts(metrics, thresholds)
    ]


def _record(o: Outcome) -> dict[str, Any]:
    c = o.call
    return {
        "feature": c.feature,
        "id": c.case["id"],
        "split": c.case["split"],
        "variant": c.variant,
        "code": o.code,
        "error": o.error,
        "latency_s": round(o.latency_s, 3),
        "retries": o.retries,
        "response": o.response,
        "judgement": o.judgement,
    }


def _input(o: Outcome) -> dict[str, Any]:
    case = o.call.case
    if o.call.feature == "feed":
        posts = {p["post_id"]: p for p in case["candidates"]}
        return {
            "member": case["member"],
            "candidates (as sent)": [
                f"{i} [{case['labels'][i]}] {posts[i]['author']}: {posts[i]['text'][:90]}"
                for i in o.call.order
            ],
        }
    keys = {
        "rewrite": ("draft", "tone", "max_length_chars"),
        "replies": ("turns", "suggestion_count"),
        "search": ("query", "locale", "expansion_count"),
    }[o.call.feature]
    return {k: case[k] for k in keys}


def _actual(o: Outcome) -> Any:
    response = {k: v for k, v in (o.response or {}).items() if k != "usage"}
    if o.call.feature == "feed" and o.response:
        labels = o.call.case["labels"]
        return [
            f"{p['post_id']} [{labels.get(p['post_id'], '?')}] "
            f"{p.get('relevance_score', 0):.2f} {p.get('reason', '')}"
            for p in response["ranked_posts"]
        ]
    return response


def _verdict(o: Outcome) -> str:
    j = o.judgement
    if not o.ok:
        return f"ERROR {o.code}: {o.error}"
    if o.call.feature == "feed":
        return (
            f"ndcg@3 {j['ndcg_at_3']:.3f} (random {j['random_ndcg_at_3']:.3f}); "
            f"labels in returned order {j['ranked_labels']}"
        )
    return ", ".join(f"{k}={v}" for k, v in j.items() if v not in (None, [], {}, ""))


def _dump(outcomes: list[Outcome]) -> str:
    lines = [
        "# genai eval: side by side",
        "",
        "Each case: the input, the labels, what the server answered, and the verdict.",
        "",
    ]
    for feature in FEATURES:
        mine = [o for o in outcomes if o.call.feature == feature]
        if not mine:
            continue
        lines += [f"## {feature}", ""]
        for o in mine:
            c = o.call.case
            variant = f" ({o.call.variant})" if o.call.variant else ""
            title = f"### {c['id']}{variant} [{c['split']}]"
            tags = f" tags: {', '.join(c['tags'])}" if c.get("tags") else ""
            lines += [
                title + tags,
                "",
                "input:",
                "```json",
                json.dumps(_input(o), indent=1, ensure_ascii=False),
                "```",
                "expected:",
                "```json",
                json.dumps(FEATURES[feature].expected(c), ensure_ascii=False),
                "```",
                "actual:",
                "```json",
                json.dumps(_actual(o), indent=1, ensure_ascii=False),
                "```",
                f"verdict: {_verdict(o)} ({o.latency_s:.1f} s)",
                "",
            ]
    return "\n".join(lines)
