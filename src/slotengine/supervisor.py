"""`slotengine dev`: run the servers it needs, migrate, start the engine's processes, and stop
every child, in order, on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from slotengine.api.auth import issue_token
from slotengine.config import DEV_JWT_SECRET, Settings, unsafe_secret_reason
from slotengine.embedded import (
    EmbeddedServer,
    EmbeddedUnavailable,
    die_with_parent,
    start_postgres,
    start_redis,
)
from slotengine.store.database import create_database, migrate

DATABASE_NAME = "slotengine"


@dataclass
class Supervisor:
    settings: Settings
    data_dir: Path
    servers: list[EmbeddedServer] = field(default_factory=list)
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> int:
        """Start everything, print where to find it, and wait for a signal or a crash."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        try:
            try:
                database_url, redis_url = self._servers()
            except EmbeddedUnavailable as missing:
                print(f"slotengine: {missing}", file=sys.stderr, flush=True)
                return 1
            env = {
                **os.environ,
                "SLOTENGINE_DATABASE_URL": database_url,
                "SLOTENGINE_REDIS_URL": redis_url,
                # A terminal reads text more easily; set SLOTENGINE_LOG_FORMAT=json to override.
                "SLOTENGINE_LOG_FORMAT": os.environ.get("SLOTENGINE_LOG_FORMAT", "text"),
                # GraphiQL's docs and completion need introspection; production leaves it off.
                "SLOTENGINE_INTROSPECTION": os.environ.get("SLOTENGINE_INTROSPECTION", "true"),
                # Only the processes dev runs may sign with the public development secret.
                "SLOTENGINE_ALLOW_DEV_SECRET": "true",
            }
            self._spawn(
                "api", ["serve", "--host", self.settings.host, "--port", str(self.settings.port)], env
            )
            self._spawn("worker", ["worker", "--workers", "1"], env)
            self._spawn("scheduler", ["scheduler"], env)
            if not self._wait_until_healthy():
                return 1
            self._banner()
            while not self.stopping.wait(0.5):
                for name, child in self.children:
                    if child.poll() is not None:
                        print(f"slotengine: {name} exited with {child.returncode}; stopping", flush=True)
                        return 1
            return 0
        finally:
            self.shutdown()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _servers(self) -> tuple[str, str]:
        database_url = self.settings.database_url
        redis_url = self.settings.redis_url
        if database_url is None:
            print(f"slotengine: starting embedded PostgreSQL in {self.data_dir / 'postgres'}", flush=True)
            server = start_postgres(self.data_dir / "postgres")
            self.servers.append(server)
            if server.data_dir != (self.data_dir / "postgres").resolve():
                print(
                    f"slotengine: its cluster is in {server.data_dir}, which its user can reach", flush=True
                )
            database_url = asyncio.run(create_database(server.url, DATABASE_NAME))
        if redis_url is None:
            print(f"slotengine: starting embedded Redis in {self.data_dir / 'redis'}", flush=True)
            server = start_redis(self.data_dir / "redis")
            self.servers.append(server)
            redis_url = server.url
        applied = asyncio.run(migrate(database_url))
        if applied:
            print(f"slotengine: applied migrations {', '.join(applied)}", flush=True)
        return database_url, redis_url

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        child = subprocess.Popen(
            [sys.executable, "-m", "slotengine.cli", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        self.children.append((name, child))

    def _wait_until_healthy(self, timeout: float = 60.0) -> bool:
        url = f"http://{self.settings.host}:{self.settings.port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if any(child.poll() is not None for _, child in self.children):
                print("slotengine: the api process failed to start", flush=True)
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def _banner(self) -> None:
        secret = self.settings.jwt_secret
        ttl = self.settings.token_ttl_seconds
        admin = issue_token(secret, "admin", admin=True, ttl_seconds=ttl)
        user = issue_token(secret, "alice", ttl_seconds=ttl)
        base = f"http://{self.settings.host}:{self.settings.port}"
        lines = [
            "",
            "slotengine is running",
            f"  GraphiQL:     {base}/graphql",
            f"  slot board:   {base}/",
            f"  health:       {base}/healthz",
            f"  admin token:  {admin}",
            f"  user token (alice): {user}",
            '  In GraphiQL\'s Headers tab: {"Authorization": "Bearer <token>"}',
        ]
        if secret == DEV_JWT_SECRET:
            lines.append(
                "  (tokens are signed with the public development secret, which anyone can use to"
                " mint an admin token: fine on your machine only; serve, worker and scheduler"
                " refuse it, so set SLOTENGINE_JWT_SECRET anywhere else)"
            )
        lines.append("Press Ctrl+C to stop.")
        print("\n".join(lines), flush=True)

    def shutdown(self) -> None:
        """Stop the engine's processes first, then the servers they used; wait for each."""
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        for _, child in reversed(self.children):
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for server in reversed(self.servers):
            server.stop()
        self.children.clear()
        self.servers.clear()


def run_dev(settings: Settings, data_dir: Path) -> int:
    """Run the whole engine in the foreground until SIGINT or SIGTERM."""
    if settings.jwt_secret == DEV_JWT_SECRET:
        print("slotengine: dev signs tokens with the public development secret", flush=True)
    else:
        reason = unsafe_secret_reason(settings)
        if reason is not None:
            print(f"slotengine: refusing to start: {reason}", file=sys.stderr, flush=True)
            return 2
    data_dir.mkdir(parents=True, exist_ok=True)
    return Supervisor(settings=settings, data_dir=data_dir).run()
