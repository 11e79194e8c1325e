"""Servers, an in-process engine and real worker/scheduler processes for a benchmark run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil

from slotengine.config import Settings
from slotengine.embedded import EmbeddedServer, free_port, start_postgres, start_redis
from slotengine.redis.keys import task_stream
from slotengine.service.engine import Engine, close_engine, open_engine
from slotengine.store.database import create_database, migrate


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, values_ms: list[float]) -> str:
    if not values_ms:
        return f"{name:<34} n=0"
    return (
        f"{name:<34} n={len(values_ms):<5} p50={percentile(values_ms, 50):8.1f} ms"
        f"  p99={percentile(values_ms, 99):8.1f} ms  max={max(values_ms):8.1f} ms"
    )


@contextlib.asynccontextmanager
async def bench_engine(*, workers: int = 0) -> AsyncIterator[tuple[Engine, Settings]]:
    """Embedded servers (unless SLOTENGINE_DATABASE_URL/REDIS_URL are set), migrated, plus
    `workers` worker processes and, if any, one scheduler."""
    servers: list[EmbeddedServer] = []
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="slotengine-bench-") as scratch:
        os.chmod(scratch, 0o755)
        database_url = os.environ.get("SLOTENGINE_DATABASE_URL")
        redis_url = os.environ.get("SLOTENGINE_REDIS_URL")
        if database_url is None:
            servers.append(start_postgres(Path(scratch) / "postgres", durable=False))
            database_url = servers[-1].url
        if redis_url is None:
            servers.append(start_redis(Path(scratch) / "redis"))
            redis_url = servers[-1].url
        database_url = await create_database(database_url, f"slotengine_bench_{uuid.uuid4().hex[:8]}")
        await migrate(database_url)
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            redis_prefix=f"bench-{uuid.uuid4().hex[:6]}:",
            db_pool_size=40,
            log_level="warning",
        )
        env = {
            **os.environ,
            "SLOTENGINE_DATABASE_URL": database_url,
            "SLOTENGINE_REDIS_URL": redis_url,
            "SLOTENGINE_REDIS_PREFIX": settings.redis_prefix,
            "SLOTENGINE_LOG_LEVEL": "warning",
            # A local measurement, like `dev`: the development secret is allowed unless one is set.
            "SLOTENGINE_ALLOW_DEV_SECRET": "true",
        }
        engine = await open_engine(settings)
        try:
            if workers:
                for _ in range(workers):
                    children.append(_spawn(["worker", "--workers", "1"], env))
                children.append(_spawn(["scheduler"], env))
                await _wait_for_workers(engine, settings, workers)
            engine_env = {k: v for k, v in env.items() if k.startswith("SLOTENGINE_")}
            before = {k: os.environ.get(k) for k in engine_env}
            os.environ.update(engine_env)  # for spawn_api, during this scenario only
            try:
                yield engine, settings
            finally:
                for key, value in before.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        finally:
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                child.wait(30)
            await close_engine(engine)
            for server in reversed(servers):
                server.stop()


def spawn_api(port: int) -> subprocess.Popen[bytes]:
    """A `slotengine serve` process on the benchmark's servers (call inside bench_engine)."""
    return _spawn(["serve", "--port", str(port)], dict(os.environ))


def spawn_floor(port: int) -> subprocess.Popen[bytes]:
    """The floor app (bench/floor.py) in a uvicorn process of its own, on the same servers."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", str(port)],
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )


async def wait_until_serving(port: int, within: float = 60) -> None:
    """Poll GET /healthz on 127.0.0.1:port until it answers 200."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered /healthz on port {port}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def engine_and_floor() -> AsyncIterator[tuple[Engine, Settings, int, int]]:
    """bench_engine plus one `slotengine serve` process and one floor process on its servers:
    (engine in this process, settings, API port, floor port)."""
    async with bench_engine() as (engine, settings):
        api_port, floor_port = free_port(), free_port()
        processes = [spawn_api(api_port), spawn_floor(floor_port)]
        _SERVERS.update({api_port: processes[0].pid, floor_port: processes[1].pid})
        try:
            await wait_until_serving(api_port)
            await wait_until_serving(floor_port)
            yield engine, settings, api_port, floor_port
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(30)
            _SERVERS.pop(api_port, None)
            _SERVERS.pop(floor_port, None)


# The server processes engine_and_floor started, by port: whose CPU time cpu_seconds reads.
_SERVERS: dict[int, int] = {}


def cpu_seconds(port: int) -> float:
    """CPU time (user + system) the server on `port` has used so far: its cost, whatever else
    runs on the machine (its throughput there is shared with every other process)."""
    times = psutil.Process(_SERVERS[port]).cpu_times()
    return float(times.user + times.system)


class SideBySide:
    """Figures of the engine and the floor measured in alternating rounds, printed as they come
    and then as the median of each round's engine/floor ratio."""

    def __init__(self) -> None:
        self.figures: dict[str, list[tuple[float, float]]] = {}
        self.units: dict[str, tuple[str, bool]] = {}
        self.wrong: dict[str, int] = {}  # rounds in which a side gave wrong answers

    def add(
        self,
        name: str,
        engine: float,
        floor: float,
        unit: str,
        *,
        higher_is_better: bool = False,
        wrong: bool = False,
    ) -> None:
        """Record one round's figure; `wrong` marks a round in which some answers were wrong."""
        self.figures.setdefault(name, []).append((engine, floor))
        self.units[name] = (unit, higher_is_better)
        self.wrong[name] = self.wrong.get(name, 0) + wrong
        print(
            f"  {name:<40} engine {engine:9.2f} {unit:<5} floor {floor:9.2f} {unit:<5}"
            f" ratio {engine / floor:6.2f}{'  (WRONG ANSWERS: not comparable)' if wrong else ''}",
            flush=True,
        )

    def report(self) -> None:
        for name, pairs in self.figures.items():
            unit, higher = self.units[name]
            ratios = [e / f for e, f in pairs]
            better = "higher" if higher else "lower"
            print(
                f"{name:<42} engine/floor = {statistics.median(ratios):5.2f} (median of {len(ratios)};"
                f" {', '.join(f'{r:.2f}' for r in ratios)}; {better} is better)"
                f"  engine {statistics.median(e for e, _ in pairs):.2f} {unit},"
                f" floor {statistics.median(f for _, f in pairs):.2f} {unit}"
                + (f"  !! {self.wrong[name]} round(s) with wrong answers" if self.wrong[name] else ""),
                flush=True,
            )


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "slotengine.cli", *args], env=env, stdin=subprocess.DEVNULL
    )


async def _wait_for_workers(engine: Engine, settings: Settings, count: int) -> None:
    stream = task_stream(settings.redis_prefix)
    for _ in range(600):
        if await engine.redis.exists(stream):
            groups = await engine.redis.xinfo_groups(stream)
            if sum(int(g["consumers"]) for g in groups) >= count:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError("workers did not start")
