"""The `genai` command: `genai serve` runs services; `genai model prepare` converts the default model."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import structlog

from genai_core.config import ConfigError, load_config
from genai_core.observability.logging import configure_logging

log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genai", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run gRPC services on one in-process vLLM engine")
    serve.add_argument("--config", type=Path, help="YAML config file (defaults apply without one)")
    serve.add_argument("--services", help="comma-separated config names of the services to serve (default: all)")
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="gRPC port (server.port, default 50051)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (metrics.port, default 9090)")
    serve.add_argument("--model", help="Hugging Face model directory, or 'default' (engine.model)")
    model = sub.add_parser("model", help="manage the embedded default model")
    model.add_argument("action", choices=["prepare"], help="convert the default model into the cache")
    # Listed for --help only: main() hands these tools their arguments before parsing, so
    # their parsers (and packages) are loaded only when they run.
    sub.add_parser("bench", help="benchmark targets side by side (genai bench --help, docs/benchmarks.md)")
    sub.add_parser("eval", help="measure answer quality on labelled data sets (genai eval --help, docs/quality.md)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    server = {k: v for k, v in (("services", args.services), ("host", args.host), ("port", args.port)) if v is not None}
    out: dict[str, dict[str, Any]] = {"server": server}
    if args.metrics_port is not None:
        out["metrics"] = {"port": args.metrics_port}
    if args.model is not None:
        out["engine"] = {"model": args.model}
    return out


def _serve(args: argparse.Namespace) -> int:
    from genai_core.engine.vllm_engine import VllmEngine
    from genai_core.models import resolve_model
    from genai_services.host.server import serve
    from genai_services.registry import REGISTRY

    try:
        config = load_config(args.config, _overrides(args), REGISTRY.names)
        configure_logging(config.logging.level, config.logging.json)
        model_path = resolve_model(config)
    except ConfigError as e:
        print(f"genai: {e}", file=sys.stderr)
        return 2
    engine = VllmEngine(config.engine, model_path, config.admission, config.logging.log_prompts)
    return asyncio.run(serve(config, engine))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # The benchmark and the evaluation are packages beside the product, imported only here.
        from genai_bench.cli import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["eval"]:
        from genai_eval.cli import main as eval_main

        return eval_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    from genai_core.models import ensure_default_model

    print(ensure_default_model(progress=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
