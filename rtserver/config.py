"""Configuration, flowing one way: defaults < TOML file < ``RTSERVER_*`` env < CLI flags.

Every setting is one field of :class:`Settings`; its CLI flag (``--max-text-chars``),
environment variable (``RTSERVER_MAX_TEXT_CHARS``) and TOML key (``max_text_chars``)
are derived from the field name, and its help text is the field's ``doc`` metadata.
Nothing else in rtserver reads the environment.

``rtserver worker`` is configured the same way from :class:`WorkerSettings`, with its own
file (``rtserver worker --config worker.toml``, the same flat keys as its flags) and its
own variables, ``RTSERVER_WORKER_<NAME>`` (``RTSERVER_WORKER_MAX_QUEUE``); a variable with
that prefix that names no worker setting (and is no gateway setting, like
``RTSERVER_WORKER_RETRY_S``) is refused. The gateway's embedded worker takes its
settings from the gateway's (rtserver/server/embedded.py).

Lists come as repeated flags, comma-separated env values or TOML arrays. The
use-case → model map is the TOML table ``[models]`` or ``RTSERVER_MODELS=chat=m1,agent=m2``.

The sampling settings marked ``card`` (temperature, top_p, repetition_penalty,
system_prompt) default to the model card of the ``model`` setting
(``rtserver/engines/models.py``), not to a fixed value: any layer that sets one wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import tomllib
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtserver.engines import synthetic
from rtserver.engines.models import DEFAULT_MODEL, SMOLLM2_CARD, card_for
from rtserver.engines.registry import ENGINES, SYNTHETIC_OPTIONS
from rtserver.exceptions import ConfigError
from rtserver.protocol.frames import Limits
from rtserver.routing.usecases import USE_CASES

# Tokens per engine step (decode tokens included) while a long prompt prefills beside
# decoding streams: the openvino engine's default too (raised to capacity + 16 where that
# is more: engines/openvino.py, step_budget). Chosen by measurement (bench/worker_stall.py,
# bench/engine_vs_gateway.py; docs/BENCHMARKS.md "Prefill chunk, again, on a quiet
# machine"): 64 keeps a 16-request burst's TTFT through the gateway within +13 ms of the
# raw engine (+108 ms at 32) and the long prompt's TTFT lowest; 32 smooths the streams
# decoding beside a long prompt (their ITL p99 3.4-3.6x their p50, against 4.8-5.8x at
# 64) for 1.1-1.4x that prompt's TTFT. Neither reaches 3x on a 2-core box.
PREFILL_CHUNK = 64

_LIMITS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Limits)}  # one source: protocol.frames.Limits


def _f(default: Any, doc: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


ENGINE_HOSTS = ("auto", "process", "inline")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class WorkerSettings:
    """One ``rtserver worker``: flag ``--max-queue``, env ``RTSERVER_WORKER_MAX_QUEUE``, TOML key ``max_queue``.

    An engine option left at its empty or 0 default is not passed to the engine, which then
    keeps its own default (``engine_options``).
    """

    # --- engine
    engine: str = _f("openvino", "openvino, transformers, gpu, openai or synthetic")
    model: str = _f(DEFAULT_MODEL, "model name, path, or (openai) remote model")
    model_id: str = _f("", "model id reported to gateways (empty: the engine names it after model)")
    capacity: int = _f(16, "concurrent sequences")
    engine_host: str = _f("auto", "where the engine computes: process (its own host process), inline (in the "
                          "worker) or auto (inline for synthetic and openai, a process for the others)")
    prefill_chunk: int = _f(0, "prompt tokens prefilled per engine step, interleaved with other sequences' decode "
                            "(0: the engine's default; openvino 256, transformers' max_batch_tokens, gpu 512)")
    device: str = _f("", "openvino, transformers and gpu engines: device, e.g. cuda, cuda:1 or cpu "
                     "(empty: the engine's default; cuda if present)")
    max_len: int = _f(0, "gpu engine: positions of KV per sequence, prompt and answer (0: the engine's default, 4096)")
    slots: int = _f(0, "gpu engine: running plus retained sequences, at least capacity "
                    "(0: the engine's default, 2 x capacity)")
    decode_mode: str = _f("", "gpu engine: graphs, compile or eager (empty: the engine's default, graphs)")
    base_url: str = _f("", "openai engine: server URL, e.g. http://127.0.0.1:8080/v1")
    api_key: str = _f("", "openai engine: API key")
    modalities: str = _f("", "openai engine: what the model takes, e.g. text,image (empty: text)")
    synthetic_tokens: int = _f(synthetic.DEFAULT_TOKENS, "synthetic engine: tokens per response")
    synthetic_rate: float = _f(synthetic.DEFAULT_TOKENS_PER_S, "synthetic engine: tokens per second per stream (0: unpaced)")
    synthetic_first_token_ms: float = _f(0.0, "synthetic engine: delay before the first token")
    # --- process
    gpu: str = _f("", "GPU index this worker owns (sets CUDA_VISIBLE_DEVICES; empty: leave it as it is)")
    cpus: str = _f("", "CPU affinity, e.g. 0,1 (empty: any)")
    # --- serving
    listen: str = _f("127.0.0.1:7100", "HOST:PORT or unix:PATH (port 0 picks a free one)")
    advertise: str = _f("", "address gateways should use (empty: listen)")
    name: str = _f("", "worker name shown in route frames (empty: ENGINE-PID)")
    max_queue: int = _f(64, "requests waiting beyond capacity")
    heartbeat_s: float = _f(0.5, "interval of the load heartbeat to each gateway")
    drain_timeout_s: float = _f(30.0, "on SIGTERM, time in-flight requests get to finish")
    metrics_port: int = _f(0, "serve Prometheus /metrics on this port (0: off)")
    metrics_host: str = _f("127.0.0.1", "address of the /metrics endpoint")
    # --- discovery
    redis: str = _f("", "redis://… URL to register in with a heartbeat TTL (empty: no registration)")
    key_prefix: str = _f("rt", "prefix of every Redis key")
    # --- logs
    log_level: str = _f("info", "debug, info, warning or error")
    log_json: bool = _f(False, "log one JSON object per line")

    def engine_options(self) -> dict[str, Any]:
        """``create_engine`` options: ``synthetic_*`` always (the registry leaves them out for other
        engines), every other one only when set, so the engine keeps its own default for an unset one
        and refuses a set one it does not take."""
        opts: dict[str, Any] = {name: getattr(self, name) for name in SYNTHETIC_OPTIONS}
        for name in ("device", "prefill_chunk", "max_len", "slots", "decode_mode", "base_url", "api_key", "modalities"):
            if value := getattr(self, name):
                opts[name] = value
        return opts

    def cpu_set(self) -> set[int]:
        return {int(c) for c in self.cpus.split(",") if c.strip()}


_WORKER: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(WorkerSettings)}  # the embedded worker's defaults


@dataclass(frozen=True)
class Settings:
    # --- server
    host: str = _f("127.0.0.1", "address to listen on")
    port: int = _f(8000, "TCP port (0 picks a free one)")
    web_root: str = _f("", "folder served at / (default: the bundled web/ widget)")
    log_json: bool = _f(False, "log one JSON object per line")
    log_level: str = _f("info", "debug, info, warning or error")
    log_content: bool = _f(False, "include message text in debug logs (off: no user content in logs)")
    # --- protocol limits
    max_frame_bytes: int = _f(_LIMITS["max_frame_bytes"], "largest WebSocket frame accepted")
    max_text_chars: int = _f(_LIMITS["max_text_chars"], "longest message text")
    max_attachments: int = _f(_LIMITS["max_attachments"], "attachments per message")
    max_attachment_bytes: int = _f(_LIMITS["max_attachment_bytes"], "decoded bytes per attachment")
    max_context_bytes: int = _f(_LIMITS["max_context_bytes"], "JSON size of a message's context object")
    messages_per_second: float = _f(_LIMITS["messages_per_second"],
                                    "sustained client frames per second per connection (token bucket)")
    message_burst: int = _f(_LIMITS["message_burst"], "token bucket burst")
    max_errors: int = _f(50, "error frames before the connection is closed with 4009")
    outbox_frames: int = _f(512, "frames queued per connection before it is treated as a slow consumer")
    slow_consumer_timeout_s: float = _f(5.0, "a socket backed up this long without a completed write is closed (4008)")
    shutdown_grace_s: float = _f(10.0, "on SIGTERM, time in-flight responses get to finish before 1012")
    resume_grace_s: float = _f(15.0, "a response keeps generating this long after its socket dropped, for resume")
    handshake_timeout_s: float = _f(10.0, "time allowed for the WebSocket opening handshake")
    idle_timeout_s: float = _f(600.0, "close a socket with no client frame for this long")
    ping_interval_s: float = _f(20.0, "WebSocket ping interval (0 disables)")
    ping_timeout_s: float = _f(20.0, "close when a ping is not answered within this")
    max_connections_per_ip: int = _f(64, "concurrent sockets per client address")
    trusted_proxies: list[str] = _f([], "proxy addresses/CIDRs whose X-Real-IP / X-Forwarded-For names the client")
    # --- security
    auth_secret: str = _f("", "HMAC secret of connection tokens (JWT HS256); set: every socket needs a token")
    allow_anonymous: bool = _f(False, "serve a non-local address without auth (only behind an authenticating proxy)")
    allowed_origins: list[str] = _f([], "browser Origins allowed to connect (empty or '*': any)")
    # --- sessions
    redis: str = _f("", "redis://… URL; empty keeps sessions in memory")
    session_ttl_s: float = _f(1800.0, "idle session lifetime (sliding)")
    key_prefix: str = _f(_WORKER["key_prefix"], "prefix of every Redis key")
    history_max_tokens: int = _f(1536, "history kept per conversation, in estimated tokens")
    replay_ttl_s: float = _f(300.0, "how long a response's frames stay replayable")
    store_timeout_s: float = _f(1.0, "timeout of one session store operation")
    replay_frames: int = _f(2048, "frames of an active response kept for resume")
    # --- workers
    worker: list[str] = _f([], "worker address HOST:PORT or unix:PATH (repeatable); none: embedded worker")
    embedded_engine: str = _f("openvino", "engine of the embedded worker: openvino or synthetic")
    embedded_mode: str = _f("process", "embedded worker as a child 'process' or 'inproc'")
    model: str = _f(DEFAULT_MODEL, "model of the embedded worker (a known name or a path)")
    model_id: str = _f("smollm2-135m", "model id the embedded worker reports")
    capacity: int = _f(_WORKER["capacity"], "concurrent sequences of the embedded worker")
    embedded_engine_host: str = _f(_WORKER["engine_host"], "where the embedded worker's engine computes: auto, process or inline")
    prefill_chunk: int = _f(_WORKER["prefill_chunk"], "prompt tokens the embedded worker prefills per engine step (0: the engine's default: PREFILL_CHUNK for openvino)")
    synthetic_tokens: int = _f(synthetic.DEFAULT_TOKENS, "synthetic engine: tokens per response")
    synthetic_rate: float = _f(synthetic.DEFAULT_TOKENS_PER_S, "synthetic engine: tokens per second per stream (0: unpaced)")
    heartbeat_timeout_s: float = _f(3.0, "a worker silent this long is treated as hung")
    worker_retry_s: float = _f(10.0, "how long a message waits for a worker to come back")
    # --- generation
    max_tokens: int = _f(256, "tokens per response")
    # these four default to the card of `model` (see card_for); the values here are the default model's
    temperature: float = _f(SMOLLM2_CARD.temperature, "sampling temperature; 0: greedy", card=True)
    top_p: float = _f(SMOLLM2_CARD.top_p, "nucleus sampling (when temperature > 0)", card=True)
    repetition_penalty: float = _f(SMOLLM2_CARD.repetition_penalty, "repetition penalty (1: none)", card=True)
    system_prompt: str = _f(SMOLLM2_CARD.system_prompt, "system prompt prepended to every conversation", card=True)
    # --- routing
    models: dict[str, str] = _f({}, "use case → model id (TOML [models] table); unset cases use model_id")
    classifier: str = _f("", "folder of the ONNX intent classifier (default: the shipped one)")
    classifier_threads: int = _f(0, "threads for the classifier pool (0: half the cores, 1 to 4)")
    classifier_batch: int = _f(1, "most messages classified in one padded onnxruntime run (1: one at a time)")
    classifier_window_ms: float = _f(0.0, "wait this long for more messages before a batch runs (0: batch what queued)")
    classifier_queue: int = _f(32, "messages waiting for or in the classifier; beyond it they route by fast signals")
    classifier_max_wait_ms: float = _f(20.0, "a message that would wait longer for the classifier routes by fast signals")
    # --- writes
    write_delay_ms: float = _f(0.0, "collect a socket's frames this long before writing them together (0: no wait)")
    write_batch_frames: int = _f(64, "most frames written to a socket in one write")
    # --- processes
    processes: int = _f(1, "gateway processes sharing the port (SO_REUSEPORT); > 1 needs redis")
    # --- identity provider tokens (see rtserver/auth.py; HS256 with auth_secret works alongside)
    auth_public_key: str = _f("", "PEM public key file verifying RS256 / ES256 / EdDSA connection tokens")
    auth_jwks_url: str = _f("", "identity provider JWKS URL verifying RS256 / ES256 / EdDSA tokens by kid")
    auth_audience: str = _f("", "required token 'aud' (empty: a token carrying 'aud' is refused)")
    auth_issuer: str = _f("", "required token 'iss' (empty: not checked)")
    auth_leeway_s: float = _f(5.0, "clock skew allowed on exp / nbf")
    auth_subject_claim: str = _f("sub", "claim naming the user (e.g. sub, email, user_id)")
    auth_jwks_timeout_s: float = _f(3.0, "timeout of one JWKS fetch")
    auth_jwks_cache_s: float = _f(3600.0, "JWKS kept this long before it is fetched again")
    auth_jwks_min_refresh_s: float = _f(30.0, "an unknown kid fetches the JWKS at most this often")
    auth_expiry_warning_s: float = _f(60.0, "a 'token_expiring' frame goes out this long before a socket's token expires")

    def limits(self) -> Limits:
        return Limits(
            max_frame_bytes=self.max_frame_bytes,
            max_text_chars=self.max_text_chars,
            max_attachments=self.max_attachments,
            max_attachment_bytes=self.max_attachment_bytes,
            max_context_bytes=self.max_context_bytes,
            messages_per_second=self.messages_per_second,
            message_burst=self.message_burst,
        )

    def model_map(self) -> dict[str, str]:
        return {uc: self.models.get(uc, self.model_id) for uc in USE_CASES}

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_secret or self.auth_public_key or self.auth_jwks_url)

    @property
    def is_local(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")


_HINTS = typing.get_type_hints(Settings)
FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
CARD_FIELDS = tuple(name for name, f in FIELDS.items() if f.metadata.get("card"))


def _convert(name: str, value: Any, hint: Any = None) -> Any:
    hint = _HINTS[name] if hint is None else hint
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is list:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        if origin is dict:
            if isinstance(value, str):
                pairs = (p.split("=", 1) for p in value.split(",") if p.strip())
                return {k.strip(): v.strip() for k, v in pairs}
            return {str(k): str(v) for k, v in dict(value).items()}
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name!r}: cannot use {value!r} as {getattr(hint, '__name__', hint)}") from None
    raise ConfigError(f"setting {name!r} has an unsupported type {hint}")  # pragma: no cover


def _check(s: Settings) -> Settings:
    if not 0 <= s.port < 65536:
        raise ConfigError("port must be 0-65535")
    for name in ("max_frame_bytes", "max_text_chars", "max_attachment_bytes", "outbox_frames", "capacity", "max_tokens"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"trusted_proxies: {proxy!r} is not an address or CIDR") from None
    for name in ("classifier_batch", "classifier_queue", "write_batch_frames", "processes"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    for name in ("classifier_threads", "classifier_window_ms", "classifier_max_wait_ms", "write_delay_ms"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name} must not be negative")
    bad = set(s.models) - set(USE_CASES)
    if bad:
        raise ConfigError(f"[models] names unknown use cases: {', '.join(sorted(bad))}")
    if s.embedded_engine not in ("openvino", "synthetic"):
        raise ConfigError("embedded_engine must be openvino or synthetic")
    if s.embedded_mode not in ("process", "inproc"):
        raise ConfigError("embedded_mode must be process or inproc")
    if s.embedded_engine_host not in ENGINE_HOSTS:
        raise ConfigError("embedded_engine_host must be auto, process or inline")
    if s.prefill_chunk < 0:
        raise ConfigError("prefill_chunk must not be negative")
    if not s.is_local and not s.auth_enabled and not s.allow_anonymous:
        raise ConfigError(
            f"serving {s.host} without authentication: set auth_secret (RTSERVER_AUTH_SECRET), "
            "or allow_anonymous when an authenticating proxy stands in front"
        )
    return s


def read_layers(
    cls: type,
    *,
    prefix: str,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    foreign_env: Collection[str] | None = None,
) -> dict[str, Any]:
    """The values the TOML file, the ``prefix``-named env vars and ``overrides`` (flags) set for the
    fields of the dataclass ``cls``, converted to their types; a later layer wins, an unset field is absent.

    A file key or override that is no field is a ``ConfigError``. With ``foreign_env``, so is a variable
    that starts with ``prefix``, names no field and is not in ``foreign_env`` (variables another command owns).
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            values[name] = _convert(name, value, hints[name])
    environ = os.environ if env is None else env
    for name in fields:
        key = prefix + name.upper()
        if key in environ:
            values[name] = _convert(name, environ[key], hints[name])
    if foreign_env is not None:
        known = {prefix + name.upper() for name in fields} | set(foreign_env)
        unknown = sorted(key for key in environ if key.startswith(prefix) and key not in known)
        if unknown:
            raise ConfigError(f"environment: unknown setting {', '.join(unknown)} (see --help for the {prefix}* names)")
    for name, value in (overrides or {}).items():
        if value is not None:
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _convert(name, value, hints[name])
    return values


def load_settings(
    *,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build ``Settings`` from the layers; raises ``ConfigError`` on any bad value."""
    values = read_layers(Settings, prefix="RTSERVER_", config_file=config_file, env=env, overrides=overrides)
    card = card_for(values.get("model", DEFAULT_MODEL)).sampling()
    for name in CARD_FIELDS:
        values.setdefault(name, card[name])
    return _check(Settings(**values))


def _help(name: str, f: dataclasses.Field[Any], hint: Any = None) -> str:
    """The field's doc plus its default, said once; argparse %-formats help, so % is escaped."""
    hint = _HINTS[name] if hint is None else hint
    doc: str = f.metadata.get("doc", "")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator,unused-ignore]
    if f.metadata.get("card"):
        doc += f" (default: from the model card; {DEFAULT_MODEL}: {default!r})"
    elif hint is bool:
        doc += f" (default: {'on' if default else 'off'})"
    elif typing.get_origin(hint) is list:
        doc += "" if "repeatable" in doc else " (repeatable)"
    elif "default" not in doc and default not in ("", {}):
        doc += f" (default: {default})"
    return doc.replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser, cls: type = Settings, prefix: str = "RTSERVER_") -> None:
    """One ``--flag`` per field of ``cls`` (help from the field doc; default shown once)."""
    group = parser.add_argument_group(f"settings (also {prefix}<NAME> env vars or the --config TOML file)")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f.name
        flag = "--" + name.replace("_", "-")
        hint = hints[name]
        if hint is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=_help(name, f, hint))
        elif typing.get_origin(hint) is list:
            group.add_argument(flag, dest=name, action="append", default=None, metavar="VALUE",
                               help=_help(name, f, hint))
        else:
            group.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=_help(name, f, hint))


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    overrides = {name: getattr(args, name, None) for name in FIELDS}
    return load_settings(config_file=getattr(args, "config", None), env=env, overrides=overrides)


def to_flags(settings: Any) -> list[str]:
    """``--flag=value`` for each field of the dataclass ``settings`` that differs from its default:
    what ``add_arguments`` parses back into the same values (lists repeat their flag)."""
    hints = typing.get_type_hints(type(settings))
    out: list[str] = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator,unused-ignore]
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if hint is bool:
            out.append(flag if value else "--no-" + flag[2:])
        elif typing.get_origin(hint) is list:
            out += [f"{flag}={v}" for v in value]
        elif typing.get_origin(hint) is dict:
            out.append(f"{flag}={','.join(f'{k}={v}' for k, v in value.items())}")
        else:
            out.append(f"{flag}={value}")
    return out


# ---------------------------------------------------------------- the worker
WORKER_ENV_PREFIX = "RTSERVER_WORKER_"
WORKER_FIELDS = {f.name: f for f in dataclasses.fields(WorkerSettings)}


def load_worker_settings(
    *,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> WorkerSettings:
    """Build ``WorkerSettings`` from the layers (defaults < file < ``RTSERVER_WORKER_*`` < flags);
    raises ``ConfigError`` on an unknown key or variable, or a bad value."""
    gateway_env = {"RTSERVER_" + name.upper() for name in FIELDS}  # RTSERVER_WORKER_RETRY_S is the gateway's
    values = read_layers(WorkerSettings, prefix=WORKER_ENV_PREFIX, config_file=config_file, env=env,
                         overrides=overrides, foreign_env=gateway_env)
    s = WorkerSettings(**values)
    if not s.name:
        s = dataclasses.replace(s, name=f"{s.engine}-{os.getpid()}")
    return _check_worker(s)


def _check_worker(s: WorkerSettings) -> WorkerSettings:
    if s.engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}")
    if s.engine_host not in ENGINE_HOSTS:
        raise ConfigError(f"engine_host must be {', '.join(ENGINE_HOSTS[:-1])} or {ENGINE_HOSTS[-1]}")
    if s.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    for name in ("capacity", "heartbeat_s"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    for name in ("max_queue", "prefill_chunk", "max_len", "slots", "synthetic_tokens", "synthetic_rate",
                 "synthetic_first_token_ms", "drain_timeout_s"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name} must not be negative")
    if not 0 <= s.metrics_port < 65536:
        raise ConfigError("metrics_port must be 0-65535")
    try:
        s.cpu_set()
    except ValueError:
        raise ConfigError(f"cpus: {s.cpus!r} is not a comma-separated list of CPU numbers") from None
    if not s.listen.startswith("unix:"):
        _, sep, port = s.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"listen: {s.listen!r} is not HOST:PORT or unix:PATH")
    return s


def worker_settings_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> WorkerSettings:
    overrides = {name: getattr(args, name, None) for name in WORKER_FIELDS}
    return load_worker_settings(config_file=getattr(args, "config", None), env=env, overrides=overrides)
