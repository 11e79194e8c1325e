"""Running the embedded PostgreSQL as root, which PostgreSQL refuses: it runs as a system user,
and that user must reach the binaries and the cluster even when the clone sits under a
directory only its owner can enter (root's home, `mktemp -d`). Nothing of the user's is opened
up: the binaries come from a root-owned copy, and the cluster moves where that user can reach.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

PG_SYSTEM_USER = "embedded_postgres"
# Reachable by every user and kept across reboots, unlike /tmp on many systems.
SHARED_TMP = Path("/var/tmp")
CLUSTER_NOTE = "CLUSTER_IS_ELSEWHERE"


def ensure_system_user(user: str) -> None:
    """Create the system user PostgreSQL runs as, unless it exists."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True, capture_output=True)


def can_enter(user: str, directory: Path) -> bool:
    """Whether `user` may enter `directory` (and every directory above it)."""
    # Asking the kernel as that user also honours groups and ACLs.
    probe = subprocess.run(["test", "-x", str(directory)], user=user, check=False)
    return probe.returncode == 0


def reachable_install(install: Path) -> Path:
    """A root-owned copy of the PostgreSQL install under /var/tmp (made once per version)."""
    # initdb finds libpq through an RPATH ($ORIGIN/../../../embedded_postgres.libs): keep
    # that layout. Hard links make the copy instant when /var/tmp is on the same filesystem.
    package = install.parent
    libs = package.parent / "embedded_postgres.libs"
    # Named after the binaries' contents (about 20 ms to hash), not their path or mtime: every
    # clone and venv of one build shares the copy.
    digest = hashlib.sha256()
    for name in ("postgres", "initdb"):
        digest.update((install / "bin" / name).read_bytes())
    cache = SHARED_TMP / f"slotengine-postgres-{digest.hexdigest()[:16]}"
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


def cluster_outside(data_dir: Path, user: str, *, durable: bool) -> Path:
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
