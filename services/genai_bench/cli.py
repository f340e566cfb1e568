"""`genai bench`: run targets and variants side by side and write JSON, markdown and plots.

Examples (see docs/benchmarks.md for the runs in the repo):

    genai bench --model tiny --targets raw,grpc --concurrency 1,4 --out /tmp/b
    genai bench --model default --engine dtype=float32 --engine max_num_seqs=16 \\
        --targets raw,grpc,openai,hf --variant prefix_off --variant ngram \\
        --concurrency 1,4,8 --rates 0.5 --out docs/bench --name cpu-smollm2
    genai bench --targets grpc --address 127.0.0.1:50051 --concurrency 8   # a running server

Only argparse is imported at module level, so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="default",
        help="'default' (SmolLM2-135M-Instruct), 'tiny' (a random test model written to a temp dir) "
        "or a Hugging Face model directory",
    )
    p.add_argument("--model-label", help="name of the model in the report")
    p.add_argument(
        "--config", type=Path, help="a `genai serve` YAML file; its engine section is used"
    )
    p.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine setting (as in the YAML engine section, dotted for nested), repeatable",
    )
    p.add_argument(
        "--targets",
        default="raw,grpc",
        help="comma list of raw (a), engine (a'), grpc (b), openai (c), hf (d: one request at a time), "
        "hf_batch (d: static batches); default raw,grpc",
    )
    p.add_argument(
        "--order",
        help="order of the steps (most important first, for --deadline-s): inproc (raw and engine), grpc, "
        "openai, hf, hf_batch, variants (all) or a variant's name; default "
        "inproc,grpc,variants,openai,hf,hf_batch",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[:KEY=VALUE,...]",
        help="an on/off comparison on our service: prefix_off, ngram, fp8, fp8_per_channel, int8, "
        "kv_fp8, or NAME:key=value,...; repeatable",
    )
    p.add_argument(
        "--variant-target",
        choices=["grpc", "raw"],
        default="grpc",
        help="where variants run (default: our gRPC service)",
    )
    p.add_argument("--concurrency", default="1,4,8", help="closed-loop concurrencies, comma list")
    p.add_argument("--rates", default="", help="open-loop Poisson rates (requests/s), comma list")
    p.add_argument(
        "--variant-concurrency",
        help="closed-loop concurrencies for variants (default: lowest and highest --concurrency)",
    )
    p.add_argument(
        "--hf-concurrency",
        help="closed-loop concurrencies for hf and hf_batch (default: --concurrency)",
    )
    p.add_argument(
        "--hf-batch-concurrency",
        help="closed-loop concurrencies for hf_batch (default: --hf-concurrency)",
    )
    p.add_argument(
        "--hf-batch-size",
        type=int,
        default=8,
        help="hf_batch serves one static batch of up to this many queued requests at a time (default 8)",
    )
    p.add_argument(
        "--hf-requests",
        type=int,
        help="hf and hf_batch: only the first max(N, concurrency) requests of each load point "
        "(the baseline is slow)",
    )
    p.add_argument(
        "--requests", type=int, default=16, help="requests per load point, at least (default 16)"
    )
    p.add_argument(
        "--per-slot",
        type=int,
        default=2,
        help="closed loop: at least this many requests per concurrency slot (default 2)",
    )
    p.add_argument(
        "--mix",
        default="feed,suggest,rewrite,search",
        help="features and weights, e.g. 'rewrite=2,search' (default: all four equally)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workload",
        choices=["mixed", "ranking"],
        default="mixed",
        help="mixed: the four features' requests (default); ranking: RankPosts at 10-500 "
        "candidates per call against raw vLLM scoring and the old listwise design",
    )
    p.add_argument(
        "--warmup", type=int, default=4, help="unrecorded requests after each start (default 4)"
    )
    p.add_argument(
        "--address", help="grpc: an already running server (HOST:PORT) instead of a subprocess"
    )
    p.add_argument(
        "--metrics-url", help="grpc with --address: its Prometheus /metrics URL (queue time)"
    )
    p.add_argument("--openai-url", help="openai: an already running vLLM server (http://HOST:PORT)")
    p.add_argument(
        "--deadline-s", type=float, help="skip what would not start before this many seconds"
    )
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory")
    p.add_argument("--name", default="bench", help="file name stem of the JSON, markdown and PNGs")
    p.add_argument(
        "--note", action="append", default=[], help="a line added to the markdown report"
    )
    p.add_argument(
        "--report-only",
        type=Path,
        metavar="JSON",
        help="rewrite the markdown and plots of an earlier run's JSON (into --out, named --name) and exit",
    )
    from genai_bench import ranking

    ranking.add_arguments(p)


def _engine_section(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from genai_bench.suite import merge, parse_variant

    engine: dict[str, Any] = {}
    if args.config is not None:
        engine = dict((yaml.safe_load(args.config.read_text()) or {}).get("engine") or {})
    engine.pop("model", None)
    if args.engine:
        engine = merge(engine, parse_variant("engine:" + ",".join(args.engine)).overrides)
    return engine


def _model(args: argparse.Namespace) -> tuple[str, str]:
    from genai_core.config import DEFAULT_MODEL, DEFAULT_MODEL_NAME
    from genai_core.models import ensure_default_model
    from genai_testing.tiny_model import write_tiny_model

    if args.model == "tiny":
        path = write_tiny_model(Path(tempfile.mkdtemp(prefix="genai-bench-tiny-")))
        return str(path), args.model_label or "tiny random Llama (genai_testing.tiny_model.write_tiny_model)"
    if args.model == DEFAULT_MODEL:
        return str(ensure_default_model(progress=True)), args.model_label or DEFAULT_MODEL_NAME
    return str(Path(args.model).expanduser()), args.model_label or Path(args.model).name


def run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    import json

    from genai_bench import report
    from genai_bench.loadgen import Load
    from genai_bench.suite import DEFAULT_ORDER, TARGETS, Plan, Suite, parse_variant
    from genai_bench.workload import parse_mix

    if args.report_only is not None:
        results = json.loads(args.report_only.read_text())
        results["ratios"] = report.ratios(results)
        report.write_all(results, args.out, args.name)
        print(f"genai bench: wrote {args.out / (args.name + '.md')} and plots")
        return 0
    try:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = set(targets) - set(TARGETS)
        if unknown:
            raise ValueError(f"unknown targets {sorted(unknown)}")
        order = (
            tuple(o.strip() for o in args.order.split(",") if o.strip())
            if args.order
            else DEFAULT_ORDER
        )
        parse_mix(args.mix)
        variants = [parse_variant(v) for v in args.variant]
        known_steps = {"inproc", "variants", *TARGETS, *(v.name for v in variants)}
        if set(order) - known_steps:
            raise ValueError(f"unknown steps in --order: {sorted(set(order) - known_steps)}")
        conc = sorted({int(c) for c in _floats(args.concurrency)})
        loads = [Load("closed", c) for c in conc] + [Load("open", r) for r in _floats(args.rates)]
        vconc = (
            _floats(args.variant_concurrency)
            if args.variant_concurrency
            else (sorted({conc[0], conc[-1]}) if conc else [])
        )
        # Variants are compared with the base at the same loads: make sure it has them.
        for c in vconc:
            if Load("closed", int(c)) not in loads:
                loads.append(Load("closed", int(c)))
        loads.sort(key=lambda l: (l.mode != "closed", l.value))
        hf_loads = (
            [Load("closed", int(c)) for c in _floats(args.hf_concurrency)]
            if args.hf_concurrency
            else None
        )
        hf_batch_loads = (
            [Load("closed", int(c)) for c in _floats(args.hf_batch_concurrency)]
            if args.hf_batch_concurrency
            else None
        )
        for extra in (hf_loads or []) + (hf_batch_loads or []):
            # The baseline replays the reference's output lengths at the same load.
            if extra not in loads:
                raise ValueError(f"hf concurrency {int(extra.value)} is not in --concurrency")
        engine = _engine_section(args)
    except (ValueError, OSError) as e:
        print(f"genai bench: {e}", file=sys.stderr)
        return 2
    # vLLM writes its cache under ~/.cache otherwise; spawned engines inherit this.
    os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="genai-bench-vllm-"))
    if args.workload == "ranking":
        from genai_bench import ranking

        model_path, label = _model(args)
        command = "genai bench " + shlex.join(argv if argv is not None else sys.argv[2:])
        return ranking.run(args, model_path, label, engine, command)
    if set(targets) == {"grpc"} and args.address and args.model == "default":
        model_path, label = "", args.model_label or f"the model served at {args.address}"
    else:
        model_path, label = _model(args)
    command = "genai bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    plan = Plan(
        model_path=model_path,
        model_label=label,
        engine=engine,
        targets=targets,
        loads=loads,
        variants=variants,
        variant_loads=[Load("closed", int(c)) for c in vconc] if variants else [],
        variant_target=args.variant_target,
        hf_loads=hf_loads,
        hf_batch_loads=hf_batch_loads,
        requests=args.requests,
        per_slot=args.per_slot,
        mix=args.mix,
        seed=args.seed,
        warmup=args.warmup,
        hf_batch_size=args.hf_batch_size,
        hf_requests=args.hf_requests,
        order=order,
        grpc_address=args.address,
        grpc_metrics_url=args.metrics_url,
        openai_url=args.openai_url,
        deadline_s=args.deadline_s,
        out_dir=args.out,
        name=args.name,
        command=command,
        notes=args.note,
    )
    results = asyncio.run(Suite(plan).run())
    print(
        f"genai bench: wrote {args.out / (args.name + '.json')} and {args.out / (args.name + '.md')}"
    )
    for r in results["ratios"]:
        value = "n/a" if r["value"] is None else f"{r['value']:.3f}"
        target = (
            ""
            if r["target"] is None
            else f" (target {r['target']:g}: {'met' if r['met'] else 'MISSED'})"
        )
        print(f"  {r['name']}: {value}{target}")
    failed = [k for k, t in results["targets"].items() if t.get("error")]
    if failed:
        print(f"genai bench: targets failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or not results["runs"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="genai bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    return run(parser.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
