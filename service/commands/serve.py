"""``atcon serve``: the HTTP API; without ``ATCON_REDIS_URL`` also the detect workers.

With no Redis configured this one process is the whole product (the embedded
default): the API, an in-memory queue and ``ATCON_EMBEDDED_WORKERS`` detect worker
threads. With Redis it is the API only; run ``atcon worker detect`` processes beside it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode (ATCON_DEV=1): no tokens needed, every caller is an admin",
    )
    parser.add_argument(
        "--ssl-certfile",
        help="serve HTTPS with this PEM certificate (chain); default ATCON_SSL_CERTFILE",
    )
    parser.add_argument(
        "--ssl-keyfile", help="the certificate's PEM private key; default ATCON_SSL_KEYFILE"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes (default: %(default)s); more than one needs ATCON_REDIS_URL, "
        "and their metrics are added up in PROMETHEUS_MULTIPROC_DIR (a new temporary "
        "directory when unset)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        help="reverse proxies whose X-Forwarded-For/-Proto are believed (addresses or "
        "networks, comma-separated); default ATCON_FORWARDED_ALLOW_IPS, else none",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.main import create_app
    from worker import SettingsError
    from worker.settings import Settings

    overrides: dict[str, object] = {"dev": True} if args.dev else {}
    for name in ("ssl_certfile", "ssl_keyfile", "forwarded_allow_ips"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        app = create_app(settings)
    except (SettingsError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    for path in (settings.ssl_certfile, settings.ssl_keyfile):
        if path is not None and not path.is_file():
            logger.error("TLS file %s does not exist; give an existing PEM file", path)
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
    proxies = settings.forwarded_allow_ips
    if proxies:
        logger.info("believing X-Forwarded-For/-Proto from %s only", proxies)
    target: object = app
    if args.workers > 1:
        if settings.embedded:
            logger.error(
                "--workers %d needs ATCON_REDIS_URL: without Redis each process would hold "
                "its own in-memory queue",
                args.workers,
            )
            return 2
        # each process builds its app from the environment: pass the options on there
        for name in overrides:
            value = overrides[name]
            os.environ[f"ATCON_{name.upper()}"] = "1" if value is True else str(value)
        _prepare_metrics_directory()
        target = "service.commands.serve:process_app"
    elif args.workers < 1:
        logger.error("--workers must be at least 1, got %d", args.workers)
        return 2
    uvicorn.run(
        target,  # type: ignore[arg-type]
        factory=args.workers > 1,
        workers=args.workers if args.workers > 1 else None,
        host=args.host,
        port=args.port,
        log_config=None,
        timeout_graceful_shutdown=30,
        # forwarded headers only from the configured proxies: anyone else could claim
        # another address (and escape the throttle) or https (and get Secure cookies)
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
    )
    return 0


def _prepare_metrics_directory() -> Path:
    """``PROMETHEUS_MULTIPROC_DIR`` for the API processes: made when unset, emptied of a
    previous run's files (their counts would be added to this run's) when set."""
    import tempfile

    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if value:
        directory = Path(value)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="atcon-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    logger.info("metrics of every API process added up in %s", directory)
    return directory


def process_app() -> object:
    """The app of one of several API processes (``--workers``): uvicorn starts each
    afresh, so logging and token redaction are set up here as ``atcon`` sets them up."""
    import sys

    from service.core.token_hygiene import install_log_redaction
    from service.main import create_app

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_redaction()
    return create_app()
