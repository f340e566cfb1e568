"""One typed root config for a `genai serve` process, parsed once from YAML.

Keys follow vLLM's engine arguments where they mean the same thing, so a deployment's
vLLM settings carry over unchanged. Every problem is reported with the dotted key
that caused it, all at once, and the server refuses to start.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_MODEL = "default"
"""Model name meaning the embedded SmolLM2-135M-Instruct, converted on first use."""
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


class ConfigError(ValueError):
    """The configuration is invalid; `problems` holds one message per bad key."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        super().__init__(f"invalid {source}:\n  " + "\n  ".join(problems))


def _check(cond: bool, message: str) -> str | None:
    return None if cond else message


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding; `method: ngram` needs no draft model."""

    method: Literal["ngram"] | None = None
    num_speculative_tokens: int = 4
    prompt_lookup_min: int = 2
    prompt_lookup_max: int = 4

    def problems(self) -> list[str]:
        return [
            p
            for p in (
                _check(1 <= self.num_speculative_tokens <= 16, "num_speculative_tokens: must be 1..16"),
                _check(1 <= self.prompt_lookup_min, "prompt_lookup_min: must be >= 1"),
                _check(
                    self.prompt_lookup_min <= self.prompt_lookup_max,
                    "prompt_lookup_max: must be >= prompt_lookup_min",
                ),
            )
            if p
        ]


@dataclass(frozen=True)
class EngineConfig:
    """Settings of the one in-process vLLM engine, named as vLLM names them."""

    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    served_model_name: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    tensor_parallel_size: int = 1
    max_model_len: int = 8192
    max_num_seqs: int = 64
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.90
    enable_prefix_caching: bool = True
    # Tokens per KV cache block, the unit the prefix cache reuses: None = vLLM's (16 on
    # GPU, 128 on CPU). Smaller blocks let short shared prefixes hit the cache.
    block_size: int | None = None
    # None = automatic: eager on CPU (torch.compile costs a minute at every start there
    # and its cache does not reload), compiled with CUDA graphs on GPUs.
    enforce_eager: bool | None = None
    seed: int = 0
    # vLLM's CPU backend sizes its KV cache from VLLM_CPU_KVCACHE_SPACE, not from
    # gpu_memory_utilization; left unset it takes far more memory than a small pod has.
    cpu_kv_cache_space_gib: int = 4  # whole GiB: vLLM reads the variable as an integer
    # With requests in flight and no engine step (an output or a scheduler report) for
    # this long, the engine counts as dead and the process exits so the orchestrator
    # restarts it.
    stall_timeout_s: float = 120.0
    # Streamed chunks that come closer together than this are sent as one message
    # (fewer gRPC messages per token under load); 0 sends every engine output.
    stream_interval_ms: float = 0.0
    # "dummy": random weights from config.json alone (vLLM's dummy loader), so model
    # sizes that need several GPUs can be benchmarked without writing 140 GB of
    # checkpoints. For benchmarks and capacity tests only: the answers are noise.
    load_format: Literal["auto", "dummy"] = "auto"
    # vLLM's own all-reduce kernel for tensor parallelism (peer-to-peer reads between
    # GPUs). Some hosts' P2P setups hang it inside captured CUDA graphs; true falls back
    # to NCCL's all-reduce.
    disable_custom_all_reduce: bool = False
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)

    def problems(self) -> list[str]:
        out = [
            _check(bool(self.model.strip()), "model: must not be empty"),
            _check(1 <= self.tensor_parallel_size <= 64, "tensor_parallel_size: must be 1..64"),
            _check(128 <= self.max_model_len <= 1_048_576, "max_model_len: must be 128..1048576"),
            _check(1 <= self.max_num_seqs <= 4096, "max_num_seqs: must be 1..4096"),
            _check(
                0.05 <= self.gpu_memory_utilization <= 1.0, "gpu_memory_utilization: must be in [0.05, 1.0]"
            ),
            _check(self.cpu_kv_cache_space_gib >= 1, "cpu_kv_cache_space_gib: must be >= 1"),
            _check(self.stall_timeout_s >= 1, "stall_timeout_s: must be >= 1"),
            _check(0 <= self.stream_interval_ms <= 1000, "stream_interval_ms: must be 0..1000"),
        ]
        if self.block_size is not None:
            out.append(_check(self.block_size in (16, 32, 64, 128, 256), "block_size: must be 16, 32, 64, 128 or 256"))
        if self.max_num_batched_tokens is not None:
            out.append(
                _check(
                    self.max_num_batched_tokens >= self.max_num_seqs,
                    "max_num_batched_tokens: must be >= max_num_seqs",
                )
            )
        out += [f"speculative.{p}" for p in self.speculative.problems()]
        return [p for p in out if p]

    @property
    def model_name(self) -> str:
        """The name reported to callers (`Usage.model`) and in metrics."""
        if self.served_model_name:
            return self.served_model_name
        return DEFAULT_MODEL_NAME if self.model == DEFAULT_MODEL else self.model


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the gRPC port from PEM files; with client_ca_file, mutual TLS."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    require_client_auth: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    def problems(self) -> list[str]:
        out = [
            _check(
                (self.cert_file is None) == (self.key_file is None), "cert_file and key_file: set both or neither"
            ),
            _check(
                not self.require_client_auth or self.client_ca_file is not None,
                "require_client_auth: needs client_ca_file",
            ),
            _check(self.enabled or self.client_ca_file is None, "client_ca_file: needs cert_file and key_file"),
        ]
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                out.append(f"{name}: no such file {path}")
        return [p for p in out if p]


@dataclass(frozen=True)
class ServerConfig:
    """The gRPC listener and its lifecycle."""

    host: str = "0.0.0.0"
    port: int = 50051
    # Config names of the services to mount; None: every service the process knows.
    services: tuple[str, ...] | None = None
    # Seconds in-flight calls get to finish after SIGTERM before they are cancelled.
    shutdown_grace_s: float = 30.0
    max_message_bytes: int = 4 * 1024 * 1024
    reflection: bool = True
    tls: TlsConfig = field(default_factory=TlsConfig)
    # Client keepalive pings are welcome at any rate, during calls and between them: a
    # long call sends no data, and grpc's default policy (2 "too early" pings) answers
    # a client pinging every 10 s with GOAWAY, failing every call on the connection.
    min_client_ping_interval_s: float = 5.0
    # Connections are closed after this long (0: never), so that clients reconnect and
    # spread over new replicas in a rolling restart; the calls still open on a closing
    # connection get the grace (longer than admission.max_request_time_s by default).
    max_connection_age_s: float = 1800.0
    max_connection_age_grace_s: float = 150.0

    def problems(self, known_services: Collection[str] | None = None) -> list[str]:
        """Range problems; service names are checked only against `known_services` when given."""
        services = () if self.services is None else self.services
        known = ", ".join(known_services) if known_services is not None else "the known services"
        unknown = sorted(set(services) - set(known_services)) if known_services is not None else []
        out = [
            _check(0 <= self.port <= 65535, "port: must be 0..65535"),
            _check(self.services is None or bool(services), "services: name at least one of " + known),
            _check(not unknown, f"services: unknown {unknown}; known: {known}"),
            _check(len(set(services)) == len(services), "services: each service at most once"),
            _check(self.shutdown_grace_s >= 0, "shutdown_grace_s: must be >= 0"),
            _check(self.max_message_bytes >= 1024, "max_message_bytes: must be >= 1024"),
            _check(self.min_client_ping_interval_s >= 0, "min_client_ping_interval_s: must be >= 0"),
            _check(self.max_connection_age_s >= 0, "max_connection_age_s: must be >= 0"),
            _check(self.max_connection_age_grace_s >= 0, "max_connection_age_grace_s: must be >= 0"),
        ]
        return [p for p in out if p] + [f"tls.{p}" for p in self.tls.problems()]


@dataclass(frozen=True)
class AdmissionConfig:
    """What the process accepts: a bounded queue, time limits and priorities."""

    # Requests admitted but not yet producing tokens, and their prompt tokens. Past
    # either, calls get RESOURCE_EXHAUSTED with a RetryInfo delay.
    max_waiting_requests: int = 64
    max_waiting_prompt_tokens: int = 262_144
    # Longest a call may run, whatever deadline its caller set (or none).
    max_request_time_s: float = 120.0
    # vLLM priority per method ("package.Service/Method"); lower runs first. None: the
    # defaults each service declares (batch-like methods behind interactive ones); a
    # mapping replaces them all, and methods it does not name get 0.
    method_priorities: dict[str, int] | None = None

    def problems(self) -> list[str]:
        bad = [k for k in self.method_priorities or {} if "/" not in k]
        out = [
            _check(self.max_waiting_requests >= 1, "max_waiting_requests: must be >= 1"),
            _check(self.max_waiting_prompt_tokens >= 1, "max_waiting_prompt_tokens: must be >= 1"),
            _check(self.max_request_time_s > 0, "max_request_time_s: must be > 0"),
            _check(not bad, f"method_priorities: keys must look like 'package.Service/Method', got {bad}"),
        ]
        return [p for p in out if p]


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint, on a port of its own so scrapes never queue behind RPCs."""

    host: str = "0.0.0.0"
    port: int = 9090
    enabled: bool = True

    def problems(self) -> list[str]:
        return [p for p in (_check(0 <= self.port <= 65535, "port: must be 0..65535"),) if p]


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry traces over OTLP/gRPC; off unless enabled."""

    enabled: bool = False
    otlp_endpoint: str = "http://localhost:4317"
    service_name: str = "genai-services"
    sample_ratio: float = 1.0

    def problems(self) -> list[str]:
        return [p for p in (_check(0 <= self.sample_ratio <= 1, "sample_ratio: must be 0..1"),) if p]


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    json: bool = True
    # Prompts and model output can hold members' private text: off unless asked for.
    log_prompts: bool = False

    def problems(self) -> list[str]:
        return []


@dataclass(frozen=True)
class Config:
    """Root config of one `genai serve` process."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def problems(self, known_services: Collection[str] | None = None) -> list[str]:
        """Every range problem, as "section.key: message"; see `parse_config`."""
        sections = ("engine", "server", "admission", "metrics", "tracing", "logging")
        return [
            f"{name}.{p}"
            for name in sections
            for p in (
                self.server.problems(known_services) if name == "server" else getattr(self, name).problems()
            )
        ]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """Return `value` as type `tp`, or record a problem at `path` and return None."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            problems.append(f"{path}: must be a mapping")
            return None
        return _build(tp, value, path + ".", problems)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            if arg is not type(None):
                sub: list[str] = []
                out = _coerce(arg, value, path, sub)
                if not sub:
                    return out
    elif origin is dict:
        key_type, value_type = typing.get_args(tp)
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                out[_coerce(key_type, k, f"{path}.{k}", problems)] = _coerce(value_type, v, f"{path}.{k}", problems)
            return out
    elif origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return None


def _build(cls: type, data: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{prefix}{key}: unknown key{hint}")
            continue
        before = len(problems)
        coerced = _coerce(hints[key], value, prefix + key, problems)
        if len(problems) == before:
            kwargs[key] = coerced
    return cls(**kwargs)


def parse_config(
    data: dict[str, Any] | None, source: str = "config", known_services: Collection[str] | None = None
) -> Config:
    """Build and validate a Config from a parsed YAML mapping.

    Args:
        data: the parsed YAML.
        source: names the config in problems (a file name).
        known_services: the config names of the services the caller can serve;
            `server.services` must name only these (unchecked when None).
    Raises:
        ConfigError: naming every unknown key, wrongly typed value and out-of-range value.
    """
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["top level: must be a mapping of sections"], source)
    config = _build(Config, data, "", problems)
    # Bad keys fell back to defaults, so range checks of the rest are still meaningful.
    problems += config.problems(known_services)
    if problems:
        raise ConfigError(problems, source)
    return config


def load_config(
    path: str | Path | None,
    overrides: dict[str, dict[str, Any]] | None = None,
    known_services: Collection[str] | None = None,
) -> Config:
    """Load the YAML file at `path` (defaults when None), apply per-section overrides.

    `known_services` is passed on to `parse_config`.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds a bad key or value.
    """
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError([f"file not found: {path}"], source) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError([f"cannot read the file: {e}"], source) from None
        except yaml.YAMLError as e:
            raise ConfigError([f"not valid YAML: {e}"], source) from None
    if not isinstance(data, dict):
        raise ConfigError(["top level: must be a mapping of sections"], source)
    for section, values in (overrides or {}).items():
        if not isinstance(data.get(section) or {}, dict):
            continue  # parse_config reports "<section>: must be a mapping"
        merged = dict(data.get(section) or {})
        merged.update(values)
        data[section] = merged
    return parse_config(data, source, known_services)
