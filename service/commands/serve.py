"""``atcon serve``: the HTTP API; without ``ATCON_REDIS_URL`` also the detect workers.

With no Redis configured this one process is the whole product (the embedded
default): the API, an in-memory queue and ``ATCON_EMBEDDED_WORKERS`` detect worker
threads. With Redis it is the API only; run ``atcon worker detect`` processes beside it.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode (ATCON_DEV=1): no tokens needed, every caller is an admin",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.main import create_app
    from worker._exceptions import SettingsError
    from worker.settings import Settings

    try:
        settings = Settings(dev=True) if args.dev else Settings()
        app = create_app(settings)
    except (SettingsError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    if settings.dev and not settings.tokens:
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            logger.error(
                "development mode without tokens makes every caller an admin; it only "
                "binds to 127.0.0.1 (set ATCON_API_TOKENS to serve on %s)",
                args.host,
            )
            return 2
        logger.warning("development mode without tokens: every caller is an admin")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        timeout_graceful_shutdown=30,
        proxy_headers=False,
    )
    return 0
