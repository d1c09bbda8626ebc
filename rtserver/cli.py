"""The ``rtserver`` command: serve, worker, route, fetch-model."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Sequence

from rtserver import __version__
from rtserver.config import (
    WORKER_ENV_PREFIX,
    WorkerSettings,
    add_arguments,
    settings_from_args,
    worker_settings_from_args,
)
from rtserver.exceptions import ConfigError, RtServerError
from rtserver.runner import run_gated, run_uvloop

log = logging.getLogger("rtserver")


def _setup_logging(level: str, as_json: bool) -> None:
    from rtserver.logs import configure

    configure(level, as_json)


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (busy, not allowed, not an address here), or None.

    Binds and closes a socket the way the server will (``SO_REUSEADDR``, no ``SO_REUSEPORT``),
    so a port another process listens on is found before anything slow starts.
    """
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                return _bind_error(host, port, exc)
    return None


def _bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another rtserver?); stop it or choose another --port"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on port {port} (ports below 1024 need privileges); choose another --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; check --host"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _setup_logging(settings.log_level, settings.log_json)
    problem = port_problem(settings.host, settings.port)
    if problem:
        print(f"rtserver: {problem}", file=sys.stderr)
        return 2
    if settings.processes > 1:
        from rtserver.server.processes import serve_processes

        return asyncio.run(serve_processes(settings))
    from rtserver.server.app import run_gateway
    from rtserver.server.resources import engine_blocks_loop

    if not settings.worker and settings.embedded_engine == "openvino":
        log.info("starting: model %s on openvino (the first start fetches it), then http://%s:%s/",
                 settings.model, settings.host, settings.port)
    try:
        (run_gated if engine_blocks_loop(settings) else run_uvloop)(run_gateway(settings))
    except OSError as exc:  # lost the port between the check and the bind
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        print(f"rtserver: {_bind_error(settings.host, settings.port, exc)}", file=sys.stderr)
        return 2
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    ws = worker_settings_from_args(args)
    _setup_logging(ws.log_level, ws.log_json)
    import os

    if ws.gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ws.gpu
    if ws.cpus:
        os.sched_setaffinity(0, ws.cpu_set())
    from rtserver.workers.host import EngineSpec
    from rtserver.workers.worker import engine_link, gated_worker, serve_worker

    spec = EngineSpec.from_settings(ws)

    async def main() -> None:
        engine = engine_link(spec, ws.engine_host)
        if ws.redis:
            from rtserver.workers.discovery import register_forever

            async with register_forever(ws.redis, ws.name, ws.advertise or ws.listen, ws.key_prefix):
                await serve_worker(engine, ws)
        else:
            await serve_worker(engine, ws)

    # An engine computing inline that holds the GIL through its steps (openvino) would get
    # the worker's loop one turn per step on uvloop; a gated loop runs to idle between steps.
    (run_gated if gated_worker(spec, ws.engine_host) else run_uvloop)(main())
    return 0


def cmd_fetch_model(args: argparse.Namespace) -> int:
    _setup_logging("info", False)  # the fetch's progress lines go to stderr, the path to stdout
    from rtserver.engines.models import resolve_model

    print(resolve_model(args.model))
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from rtserver.routing.cli import main as route_main

    return route_main(args.rest)


def cmd_token(args: argparse.Namespace) -> int:
    from rtserver.auth import issue

    secret = args.secret or settings_from_args(argparse.Namespace(config=args.config)).auth_secret
    if not secret:
        print("rtserver token: no secret (--secret, RTSERVER_AUTH_SECRET or auth_secret in --config)", file=sys.stderr)
        return 2
    print(issue(secret, args.subject, args.ttl))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtserver",
        description="Realtime conversation server: one WebSocket per conversation, ONNX intent routing "
        "with smart bypass, pinned model workers, latency stats on every frame.",
    )
    parser.add_argument("--version", action="version", version=f"rtserver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (embedded CPU worker unless --worker is given)")
    serve.add_argument("--config", metavar="FILE", help="TOML file with settings (keys as below, without --)")
    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run one model worker process")
    worker.add_argument("--config", metavar="FILE", help="TOML file with worker settings (keys as below, without --)")
    add_arguments(worker, WorkerSettings, WORKER_ENV_PREFIX)
    worker.set_defaults(func=cmd_worker)

    route = sub.add_parser("route", help="classify a text with the intent router (see `rtserver route -h`)",
                           add_help=False)
    route.add_argument("rest", nargs=argparse.REMAINDER)
    route.set_defaults(func=cmd_route)

    token = sub.add_parser("token", help="issue a signed connection token (JWT HS256) for testing")
    token.add_argument("--subject", default="dev", help="user id the token stands for")
    token.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    token.add_argument("--secret", default="", help="HMAC secret (default: the server's auth_secret setting)")
    token.add_argument("--config", metavar="FILE", help="TOML settings file to read auth_secret from")
    token.set_defaults(func=cmd_token)

    fetch = sub.add_parser("fetch-model", help="download the embedded default model into the cache")
    fetch.add_argument("model", nargs="?", default="smollm2-135m")
    fetch.set_defaults(func=cmd_fetch_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"rtserver: configuration error: {exc}", file=sys.stderr)
        return 2
    except RtServerError as exc:
        print(f"rtserver: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
