"""`genai eval`: answer quality per feature on the labelled data sets (docs/quality.md).

Examples:

    genai eval --model default --config config/cpu.yaml --split dev,test --out docs/quality
    genai eval --address 127.0.0.1:50051 --features search,rewrite --split dev --out /tmp/e
    genai eval --model default --config config/cpu.yaml --split test --gate   # exit 1 below a gate
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from genai_eval.datasets import FEATURES, SPLITS


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if bad := [n for n in names if n not in allowed]:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(bad)}; expected {', '.join(allowed)}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genai eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--address", help="host:port of a running `genai serve`")
    where.add_argument(
        "--model",
        default="default",
        help="start a server on this model: 'default' (SmolLM2-135M-Instruct) or a model directory",
    )
    p.add_argument(
        "--wait-s",
        type=float,
        default=300.0,
        help="with --address: how long to wait for it to be SERVING (default 300)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="`genai serve` YAML for the server it starts (ports are replaced)",
    )
    p.add_argument(
        "--split",
        default="test",
        type=lambda s: _names(s, SPLITS, "split"),
        help="dev, test or dev,test (default test)",
    )
    p.add_argument(
        "--features",
        default=",".join(FEATURES),
        type=lambda s: _names(s, FEATURES, "feature"),
        help=f"comma list of {', '.join(FEATURES)} (default all)",
    )
    p.add_argument("--concurrency", type=int, default=4, help="calls in flight at once (default 4)")
    p.add_argument(
        "--deadline-s", type=float, default=300.0, help="gRPC deadline of each call (default 300)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("eval-out"),
        help="folder for report.md, results.json, dump.md",
    )
    p.add_argument(
        "--cases",
        default="",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        help="only these case ids, comma list (e.g. search-01,rewrite-13), for quick looks",
    )
    p.add_argument(
        "--rejudge",
        type=Path,
        metavar="RESULTS_JSON",
        help="judge a stored run's answers again with today's checks (no server)",
    )
    p.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 when a metric of the test split is below its gate",
    )
    return p


def main(argv: list[str]) -> int:
    """Run `genai eval` with the arguments after `eval`; returns the exit status."""
    args = parser().parse_args(argv)
    from genai_eval import report
    from genai_eval.bars import GATES, verdicts
    from genai_eval.runner import evaluate, rejudge
    from genai_eval.server import started_server, wait_serving

    def finish(results: dict[str, Any], meta: dict[str, Any]) -> int:
        report.write(args.out, results, meta)
        print((args.out / "report.md").read_text())
        gated = results["splits"].get("test", {}).get("metrics", {})
        failed = [t for t, _, ok in verdicts(gated, GATES) if not ok] if args.gate else []
        for t in failed:
            print(
                f"genai eval: {t.metric} = {gated[t.metric]:.3f}, gate {t.op} {t.value}",
                file=sys.stderr,
            )
        return 1 if failed else 0

    if args.rejudge:
        stored = json.loads(args.rejudge.read_text())
        meta = {**stored["meta"], "rejudged": "genai eval " + shlex.join(argv)}
        return finish(rejudge(stored), meta)

    def run(address: str, server: str) -> int:
        results = evaluate(
            address, args.features, args.split, args.concurrency, args.deadline_s, args.cases
        )
        meta = {
            "command": "genai eval " + shlex.join(argv),
            "server": server,
            "concurrency": args.concurrency,
            "features": args.features,
            "splits": args.split,
        }
        return finish(results, meta)

    if args.address:
        # A server just started is still loading its model: wait rather than count errors.
        wait_serving(args.address, args.wait_s)
        return run(args.address, args.address)
    with started_server(args.model, args.config) as address:
        return run(
            address,
            f"started here on model {args.model}" + (f" with {args.config}" if args.config else ""),
        )
