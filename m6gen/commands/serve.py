"""``m6gen serve``: recommendations over HTTP, micro-batched onto one model worker, and a page to try them.

    m6gen serve --model runs/lora-default                  # http://127.0.0.1:8000: the page; API docs at /docs
    m6gen serve --model runs/seq --port 8080 --max-batch 16 --max-wait-ms 10
    M6GEN_API_KEY=$(cat key.txt) m6gen serve --host 0.0.0.0 # every interface: require a key

Endpoints: POST /recommend, GET /items?q=, POST /explain, GET /health, GET /info. SIGTERM stops
taking connections, finishes the requests in flight, then exits 0 (Ctrl-C: the same, exit 130).
The API, the limits and a systemd unit: docs/serving.md.
"""

from __future__ import annotations

import sys

from m6gen.config import DataArgs, DecodeArgs, DeviceArgs, ModelArgs, PriorArgs, PromptArgs, RerankArgs, RuntimeArgs
from m6gen.serving.settings import ServeArgs

GROUPS = [DataArgs, PromptArgs, ModelArgs, DeviceArgs, DecodeArgs, PriorArgs, RerankArgs, RuntimeArgs, ServeArgs]
HELP = "recommendations over HTTP (micro-batched), with a web page to try them"


def run(args) -> int:
    from m6gen.commands.common import item_features, load_data, load_recommender, say
    from m6gen.config import check_k_fits_beams, to_dict
    from m6gen.prompts import user_vars
    from m6gen.serving.app import create_app

    check_k_fits_beams(args.groups[RerankArgs], args.groups[DecodeArgs])
    sock = listen(args.host, args.port)  # before the slow load: a busy port fails at once
    ds, split = load_data(args)
    first = split.users[0] if split.users else None
    preview = (split.test_history(first), user_vars(first, ds.profiles)) if first else None
    rec = load_recommender(args, ds.catalog, preview=preview)
    settings = args.groups[ServeArgs]
    settings.port = sock.getsockname()[1]  # --port 0 took a free one: /info shows which
    app = create_app(rec, ds, split, item_features(ds, split), settings, options=to_dict(*args.groups.values()))
    if settings.api_key is None and not is_loopback(args.host):
        say(f"note: listening on {args.host} without --api-key: anyone who can reach this port can use the model")
    return serve(app, sock, log_level="info" if args.progress else "warning")


def listen(host: str, port: int):
    """A listening socket on ``host:port`` (port 0: any free one); a clear one-line error when that fails."""
    import socket

    from m6gen.commands.common import UsageError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: not an address of this machine ({err.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None
    sock.listen(2048)  # connections made while the model loads wait here instead of being refused
    return sock


def is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(app, sock, log_level: str = "info") -> int:
    """Run ``app`` on ``sock`` until SIGTERM or Ctrl-C; uvicorn lets the requests in flight finish first."""
    import signal

    import uvicorn

    from m6gen.commands.common import say

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    say(f"m6gen serve: http://{shown}:{port}/ (API docs at /docs; SIGTERM or Ctrl-C stops)")
    # uvicorn re-raises a SIGTERM it handled once it has shut down; a handler here makes that a clean exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=None)
    uvicorn.Server(config).run(sockets=[sock])
    say("m6gen serve: stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    from m6gen.commands.common import run_command

    return run_command(GROUPS, "m6gen serve", HELP, run, argv)


if __name__ == "__main__":
    sys.exit(main())
