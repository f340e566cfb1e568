"""Results of a run as JSON, a markdown report and matplotlib plots, and the ratios."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

TARGETS = {
    "b_over_a_throughput": 0.97,
    "b_over_c_throughput": 1.0,
    "c_over_b_ttft_p99": 1.0,
    "b_over_d_throughput_at_p99": 10.0,
    "prefix_cache_ttft_gain": 3.0,
    "ngram_itl_gain": 2.0,
    "fp8_throughput_gain": 1.4,
}


# --- looking runs up ------------------------------------------------------------------------


def _runs(results: dict[str, Any], target: str, mode: str = "closed") -> list[dict[str, Any]]:
    return [r for r in results["runs"] if r["target"] == target and r["load"]["mode"] == mode]


def _load_value(run: dict[str, Any]) -> float:
    load = run["load"]
    return float(load.get("concurrency", load.get("rate", 0)))


def _at(
    results: dict[str, Any], target: str, value: float, mode: str = "closed"
) -> dict[str, Any] | None:
    for r in _runs(results, target, mode):
        if _load_value(r) == value:
            return r
    return None


def _common(results: dict[str, Any], a: str, b: str) -> list[float]:
    va = {_load_value(r) for r in _runs(results, a)}
    vb = {_load_value(r) for r in _runs(results, b)}
    return sorted(va & vb)


def _get(run: dict[str, Any] | None, *path: str) -> float | None:
    node: Any = run
    for p in path:
        if not isinstance(node, dict):
            return None
        node = node.get(p)
    return float(node) if isinstance(node, (int, float)) else None


def _ratio(x: float | None, y: float | None) -> float | None:
    if x is None or y is None or y == 0:
        return None
    return x / y


def _entry(
    name: str, value: float | None, detail: str, target_key: str | None = None, note: str = ""
) -> dict[str, Any]:
    target = TARGETS.get(target_key or name)
    met = None if value is None or target is None else value >= target
    return {
        "name": name,
        "value": value,
        "target": target,
        "met": met,
        "detail": detail,
        "note": note,
    }


_DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16"}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _over_d_at_p99(
    results: dict[str, Any], name: str, x_runs: list[dict[str, Any]], d_runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """x's best req/s among its load points whose e2e p99 is at most that of the
    baseline's best-throughput point, over that throughput (the conservative reading)."""
    best_d = max(d_runs, key=lambda r: r["req_per_s"])
    p99_d = _get(best_d, "e2e_s", "p99")
    ok = [r for r in x_runs if p99_d is not None and (_get(r, "e2e_s", "p99") or math.inf) <= p99_d]
    note = ""
    if not ok:
        ok = [min(x_runs, key=lambda r: _get(r, "e2e_s", "p99") or math.inf)]
        note = f"no ({name}) load point reached (d)'s p99; compared at ({name})'s lowest p99"
    best = max(ok, key=lambda r: r["req_per_s"])
    return _entry(
        f"{name}_over_d_throughput_at_p99",
        _ratio(best["req_per_s"], best_d["req_per_s"]),
        f"({name}) best req/s with e2e p99 <= that of (d)'s best: ({name}) c={_load_value(best):g} "
        f"{best['req_per_s']:.3f} req/s, p99 {_fmt(_get(best, 'e2e_s', 'p99'))} s; (d) = {best_d['target']} "
        f"c={_load_value(best_d):g} {best_d['req_per_s']:.3f} req/s, p99 {_fmt(p99_d)} s; output tok/s "
        f"ratio at those points {_fmt(_ratio(_get(best, 'output_tok_per_s'), _get(best_d, 'output_tok_per_s')))}",
        target_key="b_over_d_throughput_at_p99",
        note="; ".join(
            n
            for n in (note, "" if results["machine"].get("gpu") else "target is for the H100")
            if n
        ),
    )


# --- ratios ---------------------------------------------------------------------------------


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparisons the issue asks for, from the runs present (missing ones skipped)."""
    out: list[dict[str, Any]] = []
    # (b)/(a) throughput at every common concurrency; the headline at the highest.
    loads = _common(results, "grpc", "raw")
    if loads:
        parts = []
        for c in loads:
            a, b = _at(results, "raw", c), _at(results, "grpc", c)
            parts.append(
                f"c={c:g}: {_fmt(_ratio(_get(b, 'output_tok_per_s'), _get(a, 'output_tok_per_s')), 3)} tok/s, "
                f"{_fmt(_ratio(_get(b, 'req_per_s'), _get(a, 'req_per_s')), 3)} req/s"
            )
        c = loads[-1]
        a, b = _at(results, "raw", c), _at(results, "grpc", c)
        out.append(
            _entry(
                "b_over_a_throughput",
                _ratio(_get(b, "output_tok_per_s"), _get(a, "output_tok_per_s")),
                f"output tok/s (b)/(a) at c={c:g}; " + "; ".join(parts),
            )
        )
    loads = _common(results, "grpc", "openai")
    if loads:
        c = loads[-1]
        b, cc = _at(results, "grpc", c), _at(results, "openai", c)
        parts = [
            f"c={x:g}: thr {_fmt(_ratio(_get(_at(results, 'grpc', x), 'output_tok_per_s'), _get(_at(results, 'openai', x), 'output_tok_per_s')), 3)}, "
            f"TTFT p99 (c)/(b) {_fmt(_ratio(_get(_at(results, 'openai', x), 'ttft_s', 'p99'), _get(_at(results, 'grpc', x), 'ttft_s', 'p99')), 3)}"
            for x in loads
        ]
        out.append(
            _entry(
                "b_over_c_throughput",
                _ratio(_get(b, "output_tok_per_s"), _get(cc, "output_tok_per_s")),
                f"output tok/s (b)/(c) at c={c:g}; " + "; ".join(parts),
            )
        )
        out.append(
            _entry(
                "c_over_b_ttft_p99",
                _ratio(_get(cc, "ttft_s", "p99"), _get(b, "ttft_s", "p99")),
                f"streaming rewrite TTFT p99 (c)/(b) at c={c:g} (> 1: ours ahead): "
                f"(b) {_fmt(_get(b, 'ttft_s', 'p99'), 3)} s, (c) {_fmt(_get(cc, 'ttft_s', 'p99'), 3)} s",
            )
        )
    d_runs = [r for t in ("hf", "hf_batch") for r in _runs(results, t) if r.get("req_per_s")]
    b_runs = [r for r in _runs(results, "grpc") if r.get("req_per_s")]
    if d_runs and b_runs:
        out.append(_over_d_at_p99(results, "b", b_runs, d_runs))
    a_runs = [r for r in _runs(results, "raw") if r.get("req_per_s")]
    if d_runs and a_runs:
        # The ceiling against the baseline: what (b) can reach at best (no target).
        entry = _over_d_at_p99(results, "a", a_runs, d_runs)
        entry["target"], entry["met"] = None, None
        out.append(entry)
    loads = _common(results, "openai", "raw")
    if loads and not _common(results, "grpc", "raw"):
        c = loads[-1]
        out.append(
            _entry(
                "c_over_a_throughput",
                _ratio(
                    _get(_at(results, "openai", c), "output_tok_per_s"),
                    _get(_at(results, "raw", c), "output_tok_per_s"),
                ),
                f"output tok/s (c)/(a) at c={c:g} (shown when (b) is missing)",
            )
        )
    if d_runs and b_runs:
        # The same loads side by side: what a user sees at equal offered concurrency.
        for d_key in ("hf", "hf_batch"):
            common = _common(results, "grpc", d_key)
            if not common:
                continue
            c = common[-1]
            b, d = _at(results, "grpc", c), _at(results, d_key, c)
            parts = [
                f"c={x:g}: thr {_fmt(_ratio(_get(_at(results, 'grpc', x), 'req_per_s'), _get(_at(results, d_key, x), 'req_per_s')))}x, "
                f"p99 {_fmt(_ratio(_get(_at(results, 'grpc', x), 'e2e_s', 'p99'), _get(_at(results, d_key, x), 'e2e_s', 'p99')))}x"
                for x in common
            ]
            out.append(
                _entry(
                    f"b_over_{d_key}_throughput_same_load",
                    _ratio(_get(b, "req_per_s"), _get(d, "req_per_s")),
                    f"req/s (b)/{d_key} at c={c:g}, where (b)'s e2e p99 is "
                    f"{_fmt(_ratio(_get(b, 'e2e_s', 'p99'), _get(d, 'e2e_s', 'p99')))}x {d_key}'s; "
                    + "; ".join(parts),
                )
            )
    base = "grpc"
    for key in sorted({r["target"] for r in results["runs"] if r.get("variant")}):
        variant = next(r["variant"] for r in results["runs"] if r["target"] == key)
        base = key.split("+")[0]
        loads = _common(results, base, key)
        if not loads:
            continue
        lo, hi = loads[0], loads[-1]
        b_lo, v_lo = _at(results, base, lo), _at(results, key, lo)
        b_hi, v_hi = _at(results, base, hi), _at(results, key, hi)
        thr = _ratio(_get(v_hi, "output_tok_per_s"), _get(b_hi, "output_tok_per_s"))
        if variant == "prefix_off":
            feats = []
            for f in ("feed", "suggest", "search"):
                g = _ratio(
                    _get(v_lo, "per_feature", f, "e2e_s", "p50"),
                    _get(b_lo, "per_feature", f, "e2e_s", "p50"),
                )
                if g is not None:
                    feats.append(f"{f} latency {g:.2f}x")
            out.append(
                _entry(
                    "prefix_cache_ttft_gain",
                    _ratio(_get(v_lo, "ttft_s", "p50"), _get(b_lo, "ttft_s", "p50")),
                    f"streaming rewrite TTFT p50 off/on at c={lo:g}: {_fmt(_get(v_lo, 'ttft_s', 'p50'), 3)} s / "
                    f"{_fmt(_get(b_lo, 'ttft_s', 'p50'), 3)} s; p99 gain "
                    f"{_fmt(_ratio(_get(v_lo, 'ttft_s', 'p99'), _get(b_lo, 'ttft_s', 'p99')))}; unary p50 "
                    f"{', '.join(feats) or 'n/a'}; throughput on/off at c={hi:g} {_fmt(_ratio(1, thr))}; "
                    f"cached prompt fraction on {_fmt(_get(b_lo, 'cached_prompt_fraction'))}",
                )
            )
        elif variant == "ngram":
            search = _ratio(
                _get(b_lo, "per_feature", "search", "latency_per_token_s", "p50"),
                _get(v_lo, "per_feature", "search", "latency_per_token_s", "p50"),
            )
            out.append(
                _entry(
                    "ngram_itl_gain",
                    _ratio(_get(b_lo, "tpot_s", "p50"), _get(v_lo, "tpot_s", "p50")),
                    f"streaming rewrite TPOT p50 off/on at c={lo:g}: {_fmt(_get(b_lo, 'tpot_s', 'p50'), 4)} s / "
                    f"{_fmt(_get(v_lo, 'tpot_s', 'p50'), 4)} s; search (query expansion) latency per token gain "
                    f"{_fmt(search)}; acceptance {_fmt(_get(v_lo, 'spec_acceptance_rate'))}; "
                    f"throughput on/off at c={hi:g} {_fmt(thr)}",
                )
            )
        elif variant in ("bf16", "fp16"):
            out.append(
                _entry(
                    f"{variant}_throughput_vs_base",
                    thr,
                    f"output tok/s {variant}/base at c={hi:g}: {_fmt(_get(v_hi, 'output_tok_per_s'), 1)} / "
                    f"{_fmt(_get(b_hi, 'output_tok_per_s'), 1)}",
                )
            )
        else:
            # A quantized variant that also changed dtype is compared with that dtype too.
            dtype = (results["targets"].get(key, {}).get("overrides") or {}).get("dtype")
            same_dtype = f"{base}+{_DTYPE_SHORT[dtype]}" if dtype in _DTYPE_SHORT else None
            if same_dtype and _at(results, same_dtype, hi):
                vs = _ratio(
                    _get(v_hi, "output_tok_per_s"),
                    _get(_at(results, same_dtype, hi), "output_tok_per_s"),
                )
                out.append(
                    _entry(
                        f"{variant}_throughput_vs_{_DTYPE_SHORT[dtype]}",
                        vs,
                        f"output tok/s {variant}/{same_dtype} at c={hi:g} (same activation dtype)",
                        target_key="fp8_throughput_gain"
                        if variant.startswith("fp8") and results["machine"].get("gpu")
                        else None,
                    )
                )
            out.append(
                _entry(
                    f"{variant}_throughput_gain",
                    thr,
                    f"output tok/s {variant}/base at c={hi:g}: {_fmt(_get(v_hi, 'output_tok_per_s'), 1)} / "
                    f"{_fmt(_get(b_hi, 'output_tok_per_s'), 1)}; e2e p50 at c={lo:g} "
                    f"{_fmt(_get(v_lo, 'e2e_s', 'p50'))} s vs {_fmt(_get(b_lo, 'e2e_s', 'p50'))} s; errors {v_hi.get('errors') if v_hi else 'n/a'}",
                    target_key="fp8_throughput_gain"
                    if variant.startswith("fp8") and results["machine"].get("gpu")
                    else None,
                )
            )
    return out


# --- markdown -------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:.0f}"


def _load_label(load: dict[str, Any]) -> str:
    return f"c={load['concurrency']}" if load["mode"] == "closed" else f"{load['rate']:g}/s open"


def _us(x: float | None) -> str:
    return "–" if x is None else f"{x * 1e6:.0f}"


def markdown(results: dict[str, Any], name: str) -> str:
    m = results["machine"]
    lines = [
        f"### {name}: {results['model']['label']}",
        "",
        f"- Machine: {m.get('gpu') or 'CPU'}; {m['cpus']} CPUs; {m['platform']}; OMP_NUM_THREADS={m.get('omp_num_threads')}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- Engine: `{json.dumps(results['engine'], sort_keys=True)}`",
        f"- Workload: mix `{results['workload']['mix']}`, seed {results['workload']['seed']}, requests per load "
        + ", ".join(f"{k}: {v}" for k, v in results["workload"]["requests_per_load"].items()),
        f"- Started {results['started']}, took {results.get('elapsed_s', 0):.0f} s",
    ]
    if results.get("command"):
        lines += ["", "Command:", "", f"    {results['command']}"]
    lines += [
        "",
        "Start-up times: "
        + ", ".join(
            f"{k} FAILED" if t.get("error") else f"{k} {_fmt(t.get('startup_s'), 1)} s"
            for k, t in results["targets"].items()
        ),
    ]
    failures: dict[str, list[str]] = {}
    for k, t in results["targets"].items():
        if t.get("error"):
            failures.setdefault(" ".join(t["error"].split())[:300], []).append(k)
    for error, keys in failures.items():
        lines += ["", f"Failed to start: {', '.join(keys)}: `{error}`"]
    lines += [
        "",
        "| target | load | n | req/s | out tok/s | e2e p50 / p90 / p99 (ms) | TTFT p50 / p99 (ms) | TPOT p50 (ms) | ITL p99 (ms) | queue mean (ms) | cached | front-end CPU/tok (µs) | errors | host load |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["runs"]:
        load = r["load"]
        load_s = _load_label(load)
        q = r.get("queue_s") or {}
        host = r.get("loadavg_1m_before_after") or []
        host_s = "→".join("?" if x is None else f"{x:.1f}" for x in host) if host else "–"
        lines.append(
            f"| {r['target']} | {load_s} | {r['requests']} | {_fmt(r.get('req_per_s'))} | {_fmt(r.get('output_tok_per_s'), 1)} | "
            f"{_ms(r['e2e_s']['p50'])} / {_ms(r['e2e_s']['p90'])} / {_ms(r['e2e_s']['p99'])} | "
            f"{_ms(r['ttft_s']['p50'])} / {_ms(r['ttft_s']['p99'])} | {_ms(r['tpot_s']['p50'])} | "
            f"{_ms(r['itl_s']['p99'])} | {_ms(q.get('mean'))} | {_fmt(r.get('cached_prompt_fraction'))} | {_us(r.get('frontend_cpu_per_output_token_s'))} | {r['errors']} | {host_s} |"
        )
    gc_runs = [r for r in results["runs"] if r.get("gc_pauses") is not None]
    if gc_runs:
        lines += ["", "Server GC collections during each run (over 20 ms): " + "; ".join(
            f"{r['target']} {_load_label(r['load'])}: {r['gc_pauses']:.0f} ({r['gc_pauses_over_20ms']:.0f})"
            for r in gc_runs
        )]
    if results["ratios"]:
        lines += ["", "| ratio | value | target | met | how |", "|---|---:|---:|---|---|"]
        for x in results["ratios"]:
            met = {True: "yes", False: "**no**", None: "–"}[x["met"]]
            note = f" ({x['note']})" if x.get("note") else ""
            lines.append(
                f"| {x['name']} | {_fmt(x['value'])} | {_fmt(x['target'])} | {met} | {x['detail']}{note} |"
            )
    if results["skipped"]:
        lines += [
            "",
            "Skipped: " + "; ".join(f"{s['what']} ({s['why']})" for s in results["skipped"]),
        ]
    errors = {(r["target"], k) for r in results["runs"] for k in r.get("error_kinds", []) if k}
    if errors:
        lines += ["", "Errors seen: " + "; ".join(f"{t}: {k}" for t, k in sorted(errors))]
    for note in results.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


# --- plots ----------------------------------------------------------------------------------


def plots(results: dict[str, Any], out_dir: Path, name: str) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: list[Path] = []

    def save(fig: Any, axes: Any, file_name: str, suptitle: str | None = None) -> None:
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        if suptitle:
            fig.suptitle(suptitle)
        fig.tight_layout()
        path = out_dir / file_name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    targets = list(dict.fromkeys(r["target"] for r in results["runs"]))
    closed = {t: sorted(_runs(results, t), key=_load_value) for t in targets}
    closed = {t: rs for t, rs in closed.items() if rs}
    title = f"{results['model']['label']} on {results['machine'].get('gpu') or 'CPU'}"
    if closed:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for t, rs in closed.items():
            xs = [_load_value(r) for r in rs]
            (line,) = axes[0].plot(
                xs, [r["e2e_s"]["p99"] for r in rs], marker="o", label=f"{t} p99"
            )
            axes[0].plot(
                xs,
                [r["e2e_s"]["p50"] for r in rs],
                marker=".",
                ls="--",
                color=line.get_color(),
                label=f"{t} p50",
            )
            ttft = [
                (x, r["ttft_s"]["p99"]) for x, r in zip(xs, rs) if r["ttft_s"]["p99"] is not None
            ]
            if ttft:
                axes[1].plot(*zip(*ttft), marker="o", color=line.get_color(), label=t)
        axes[0].set(
            xlabel="concurrency (closed loop)",
            ylabel="end-to-end latency (s)",
            yscale="log",
            title="latency vs load",
        )
        axes[1].set(
            xlabel="concurrency (closed loop)",
            ylabel="TTFT p99, streaming rewrite (s)",
            yscale="log",
            title="time to first text vs load",
        )
        save(fig, axes, f"{name}-latency.png", title)

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for t, rs in closed.items():
            xs = [_load_value(r) for r in rs]
            axes[0].plot(xs, [r["req_per_s"] for r in rs], marker="o", label=t)
            axes[1].plot(xs, [r["output_tok_per_s"] for r in rs], marker="o", label=t)
        axes[0].set(xlabel="concurrency", ylabel="requests/s", title="throughput vs concurrency")
        axes[1].set(
            xlabel="concurrency", ylabel="output tokens/s", title="output tokens/s vs concurrency"
        )
        save(fig, axes, f"{name}-throughput.png", title)
    opened = {t: sorted(_runs(results, t, "open"), key=_load_value) for t in targets}
    opened = {t: rs for t, rs in opened.items() if rs}
    if opened:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for t, rs in opened.items():
            xs = [_load_value(r) for r in rs]
            (line,) = ax.plot(xs, [r["e2e_s"]["p99"] for r in rs], marker="o", label=f"{t} e2e p99")
            ax.plot(
                xs,
                [r["e2e_s"]["p50"] for r in rs],
                marker=".",
                ls="--",
                color=line.get_color(),
                label=f"{t} e2e p50",
            )
        ax.set(
            xlabel="offered load (requests/s, Poisson)",
            ylabel="latency (s)",
            yscale="log",
            title=f"open loop: {title}",
        )
        save(fig, [ax], f"{name}-open-loop.png")
    return written


def write_all(results: dict[str, Any], out_dir: Path, name: str, with_plots: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
    (out_dir / f"{name}.md").write_text(markdown(results, name))
    if with_plots and results["runs"]:
        plots(results, out_dir, name)
