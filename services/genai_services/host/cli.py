"""The `genai` command: `genai serve` runs services; `genai model prepare` converts the default model."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import structlog

from genai_core.config import DEFAULT_MODEL, Config, ConfigError, load_config
from genai_core.observability.logging import configure_logging

log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genai", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run gRPC services on one in-process vLLM engine")
    serve.add_argument("--config", type=Path, help="YAML config file (defaults apply without one)")
    serve.add_argument("--services", help="comma-separated subset of feed,messaging,search")
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="gRPC port (server.port, default 50051)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (metrics.port, default 9090)")
    serve.add_argument("--model", help="Hugging Face model directory, or 'default' (engine.model)")
    model = sub.add_parser("model", help="manage the embedded default model")
    model.add_argument("action", choices=["prepare"], help="convert the default model into the cache")
    from genai_services.bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(sub.add_parser("bench", help="benchmark targets side by side (docs/benchmarks.md)"))
    # Listed for --help only: main() hands `eval` to genai_eval before this parser runs.
    sub.add_parser("eval", help="measure answer quality on labelled data sets (docs/quality.md)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    server = {k: v for k, v in (("services", args.services), ("host", args.host), ("port", args.port)) if v is not None}
    out: dict[str, dict[str, Any]] = {"server": server}
    if args.metrics_port is not None:
        out["metrics"] = {"port": args.metrics_port}
    if args.model is not None:
        out["engine"] = {"model": args.model}
    return out


def resolve_model(config: Config) -> str:
    """A local model directory for the engine; converts the default model on first use.

    Raises:
        ConfigError: engine.model names a local path that does not exist.
    """
    from genai_core.models import ensure_default_model

    if config.engine.model == DEFAULT_MODEL:
        return str(ensure_default_model())
    path = Path(config.engine.model).expanduser()
    if config.engine.model.startswith(("/", ".", "~")) and not (path / "config.json").is_file():
        raise ConfigError([f"engine.model: {path} is not a model directory (no config.json)"])
    return str(path) if path.exists() else config.engine.model


def _serve(args: argparse.Namespace) -> int:
    from genai_core.engine.vllm_engine import VllmEngine
    from genai_services.host.server import serve

    try:
        config = load_config(args.config, _overrides(args))
        configure_logging(config.logging.level, config.logging.json)
        model_path = resolve_model(config)
    except ConfigError as e:
        print(f"genai: {e}", file=sys.stderr)
        return 2
    engine = VllmEngine(config.engine, model_path, config.admission, config.logging.log_prompts)
    return asyncio.run(serve(config, engine))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:
        from genai_eval.cli import main as run_eval

        return run_eval(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "bench":
        from genai_services.bench.cli import run as run_bench

        return run_bench(args, argv[1:])
    from genai_core.models import ensure_default_model

    print(ensure_default_model(progress=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
