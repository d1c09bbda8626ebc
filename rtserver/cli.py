"""The ``rtserver`` command: serve, worker, route, fetch-model."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from rtserver import __version__
from rtserver.config import add_arguments, settings_from_args
from rtserver.engines import synthetic
from rtserver.exceptions import ConfigError, RtServerError
from rtserver.runner import run_uvloop


def _setup_logging(level: str, as_json: bool) -> None:
    from rtserver.logs import configure

    configure(level, as_json)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _setup_logging(settings.log_level, settings.log_json)
    if settings.processes > 1:
        from rtserver.server.processes import serve_processes

        return asyncio.run(serve_processes(settings))
    from rtserver.server.app import run_gateway

    run_uvloop(run_gateway(settings))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level, args.log_json)
    import os

    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if args.cpus:
        cpus = {int(c) for c in args.cpus.split(",")}
        os.sched_setaffinity(0, cpus)
    from rtserver.engines.registry import create_engine
    from rtserver.workers.worker import WorkerSettings, serve_worker

    engine = create_engine(
        args.engine, model=args.model, model_id=args.model_id, capacity=args.capacity,
        synthetic_tokens=args.synthetic_tokens, synthetic_rate=args.synthetic_rate,
        synthetic_first_token_ms=args.synthetic_first_token_ms,
        **({"modalities": args.modalities} if args.engine == "openai" else {}),
        **({"device": args.device} if args.device else {}),
        **({"base_url": args.base_url} if args.base_url else {}),
        **({"api_key": args.api_key} if args.api_key else {}),
    )
    name = args.name or f"{args.engine}-{os.getpid()}"
    settings = WorkerSettings(name=name, listen=args.listen, max_queue=args.max_queue,
                              metrics_port=args.metrics_port, metrics_host=args.metrics_host)

    async def main() -> None:
        if args.redis:
            from rtserver.workers.discovery import register_forever

            async with register_forever(args.redis, name, args.advertise or args.listen, args.key_prefix):
                await serve_worker(engine, settings)
        else:
            await serve_worker(engine, settings)

    run_uvloop(main())
    return 0


def cmd_fetch_model(args: argparse.Namespace) -> int:
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
    worker.add_argument("--engine", default="openvino", help="openvino, transformers, gpu, openai or synthetic")
    worker.add_argument("--model", default="smollm2-135m", help="model name, path, or (openai) remote model")
    worker.add_argument("--model-id", default=None, help="model id reported to gateways (default: --model)")
    worker.add_argument("--gpu", default=None, help="GPU index this worker owns (sets CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--cpus", default="", help="CPU affinity, e.g. 0,1")
    worker.add_argument("--listen", default="127.0.0.1:7100", help="HOST:PORT or unix:PATH")
    worker.add_argument("--advertise", default="", help="address gateways should use (default: --listen)")
    worker.add_argument("--name", default="", help="worker name shown in route frames")
    worker.add_argument("--capacity", type=int, default=16, help="concurrent sequences")
    worker.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond capacity")
    worker.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port (0: off)")
    worker.add_argument("--metrics-host", default="127.0.0.1", help="address of the /metrics endpoint")
    worker.add_argument("--redis", default="", help="register in Redis with a heartbeat TTL")
    worker.add_argument("--key-prefix", default="rt", help="Redis key prefix")
    worker.add_argument("--base-url", default="", help="openai engine: server URL, e.g. http://127.0.0.1:8080/v1")
    worker.add_argument("--api-key", default="", help="openai engine: API key")
    worker.add_argument("--synthetic-tokens", type=int, default=synthetic.DEFAULT_TOKENS,
                        help="synthetic engine: tokens per response")
    worker.add_argument("--synthetic-rate", type=float, default=synthetic.DEFAULT_TOKENS_PER_S,
                        help="synthetic engine: tokens/s per stream (0: unpaced)")
    worker.add_argument("--synthetic-first-token-ms", type=float, default=0.0,
                        help="synthetic engine: delay before the first token")
    worker.add_argument("--modalities", default="text", help="openai engine: what the model takes, e.g. text,image")
    worker.add_argument("--device", default="", help="transformers and gpu engines: cuda, cuda:1 or cpu (default: cuda if present)")
    worker.add_argument("--log-level", default="info")
    worker.add_argument("--log-json", action="store_true")
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
