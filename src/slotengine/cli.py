"""The `slotengine` command: dev | serve | worker | scheduler | migrate | schema | token."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from slotengine.config import Settings, get_settings, unsafe_secret_reason, variable_of


def _need_urls(settings: Settings) -> None:
    missing = [variable_of(url) for url in ("database_url", "redis_url") if not getattr(settings, url)]
    if missing:
        sys.exit(
            f"slotengine: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set "
            "(or use 'slotengine dev', which starts embedded servers: pip install 'slotengine[embedded]')"
        )


def _need_safe_secret(settings: Settings) -> None:
    reason = unsafe_secret_reason(settings)
    if reason is not None:
        sys.exit(f"slotengine: refusing to start: {reason}")


def _serve(settings: Settings, host: str, port: int) -> int:
    from slotengine.http_server import run_api
    from slotengine.logs import configure_logging

    _need_urls(settings)
    _need_safe_secret(settings)
    configure_logging(settings.log_level, settings.log_format)
    run_api(settings, host, port)
    return 0


def _worker(settings: Settings, workers: int) -> int:
    from taskiq.cli.common_args import LogLevel
    from taskiq.cli.worker.args import WorkerArgs
    from taskiq.cli.worker.run import run_worker

    _need_urls(settings)
    _need_safe_secret(settings)
    args = WorkerArgs(
        broker="workers.broker:broker",
        modules=["workers.tasks"],
        workers=workers,
        # Taskiq logs every task it runs at INFO (the sweep alone every 2 s): only from DEBUG on.
        log_level=LogLevel.DEBUG if settings.log_level.lower() == "debug" else LogLevel.WARNING,
        shutdown_timeout=10,
    )
    return run_worker(args) or 0


def _scheduler(settings: Settings) -> int:
    from workers.scheduler import main as scheduler_main

    _need_urls(settings)
    _need_safe_secret(settings)
    return scheduler_main(settings)


def _migrate(settings: Settings) -> int:
    from slotengine.store.database import migrate

    _need_urls(settings)
    assert settings.database_url is not None
    applied = asyncio.run(migrate(settings.database_url))
    print(f"applied: {', '.join(applied)}" if applied else "the database is up to date")
    return 0


def _schema() -> int:
    from slotengine.api.schema import schema

    print(schema.as_str())
    return 0


def _token(settings: Settings, name: str, admin: bool, ttl: int | None) -> int:
    from slotengine.api.auth import issue_token

    print(issue_token(settings.jwt_secret, name, admin=admin, ttl_seconds=ttl or settings.token_ttl_seconds))
    return 0


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """The command line; defaults come from `settings` (the process's settings if omitted)."""
    if settings is None:
        settings = get_settings()
    parser = argparse.ArgumentParser(prog="slotengine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run everything, with embedded servers unless URLs are set")
    dev.add_argument("--host", default=settings.host)
    dev.add_argument("--port", type=int, default=settings.port)
    dev.add_argument("--data-dir", type=Path, default=settings.data_dir)

    serve = commands.add_parser("serve", help="run the API (needs the database and Redis URLs)")
    serve.add_argument("--host", default=settings.host)
    serve.add_argument("--port", type=int, default=settings.port)

    worker = commands.add_parser("worker", help="run Taskiq workers (expiry, promotion, sweep)")
    worker.add_argument("--workers", type=int, default=1, help="worker processes")
    commands.add_parser("scheduler", help="send due timers to the workers")
    commands.add_parser("migrate", help="apply database migrations")
    commands.add_parser("schema", help="print the GraphQL schema (SDL)")

    token = commands.add_parser("token", help="print a bearer token signed with SLOTENGINE_JWT_SECRET")
    token.add_argument("name", help="the holder id (the token's sub)")
    token.add_argument("--admin", action="store_true", help="grant the admin role")
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `slotengine` console script."""
    try:
        settings = get_settings()
    except ValidationError as exc:  # a malformed SLOTENGINE_* variable: say which, no traceback
        problems = "; ".join(
            f"SLOTENGINE_{'_'.join(str(part) for part in error['loc'][:1]).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        sys.exit(f"slotengine: invalid settings: {problems}")
    except SettingsError as exc:  # a list or object setting that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"SLOTENGINE_{field.group(1).upper()}" if field else "a SLOTENGINE_* variable"
        sys.exit(f"slotengine: invalid settings: {name} must be JSON ({exc})")
    args = build_parser(settings).parse_args(argv)
    if args.command == "dev":
        from slotengine.supervisor import run_dev

        settings = settings.model_copy(update={"host": args.host, "port": args.port})
        return run_dev(settings, args.data_dir)
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "worker":
        return _worker(settings, args.workers)
    if args.command == "scheduler":
        return _scheduler(settings)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "schema":
        return _schema()
    return _token(settings, args.name, args.admin, args.ttl)


if __name__ == "__main__":
    sys.exit(main())
