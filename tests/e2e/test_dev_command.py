"""Done-when 1: `slotengine dev` starts everything on embedded servers, prints where and how to
get in, answers GraphQL with the printed tokens, and leaves no process behind when stopped."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import httpx
import psutil

from slotengine.embedded import free_port
from slotengine.root_postgres import relocated_cluster


def processes_using(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(folder) in part for part in cmdline):
            found.append(process)
    return found


async def read_banner(stream: asyncio.StreamReader) -> str:
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), 120)).decode()
        if not line:
            raise AssertionError("dev exited before printing its banner:\n" + "".join(lines))
        lines.append(line)
        if "Press Ctrl+C to stop." in line:
            return "".join(lines)


async def test_dev_runs_the_engine_prints_tokens_and_stops_every_child(tmp_path: Path) -> None:
    data_dir = tmp_path / "engine-data"
    port = free_port()
    # No secret set: dev alone may run on the development secret, and must say so.
    unset = ("SLOTENGINE_DATABASE_URL", "SLOTENGINE_REDIS_URL", "SLOTENGINE_JWT_SECRET")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    dev = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "slotengine.cli",
        "dev",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert dev.stdout is not None
        banner = await read_banner(dev.stdout)
        graphiql = re.search(r"GraphiQL:\s+(\S+)", banner)
        admin = re.search(r"admin token:\s+(\S+)", banner)
        user = re.search(r"user token \(alice\):\s+(\S+)", banner)
        assert graphiql and admin and user, banner
        assert graphiql.group(1) == f"http://127.0.0.1:{port}/graphql"
        assert "public development secret" in banner
        assert processes_using(data_dir), "expected embedded servers under the data dir"
        children = psutil.Process(dev.pid).children(recursive=True)
        commands = [" ".join(c.cmdline()) for c in children]
        for role in ("serve", "worker", "scheduler"):
            assert any(f"slotengine.cli {role}" in c for c in commands), commands

        url = graphiql.group(1)
        async with httpx.AsyncClient(timeout=10) as http:
            page = await http.get(url, headers={"accept": "text/html"})
            created = await http.post(
                url,
                json={
                    "query": """mutation { createSlot(input: {resource: "chair-1",
                      startsAt: "2031-01-01T10:00:00Z", endsAt: "2031-01-01T10:30:00Z"}) {
                      ... on Slot { id } } }"""
                },
                headers={"Authorization": f"Bearer {admin.group(1)}"},
            )
            slot_id = created.json()["data"]["createSlot"]["id"]
            reserved = await http.post(
                url,
                json={
                    "query": 'mutation($s: ID!) { reserveSlot(slotId: $s, idempotencyKey: "1") '
                    "{ ... on Booking { holder state } } }",
                    "variables": {"s": slot_id},
                },
                headers={"Authorization": f"Bearer {user.group(1)}"},
            )
        assert page.status_code == 200 and "GraphiQL" in page.text
        assert reserved.json()["data"]["reserveSlot"] == {"holder": "alice", "state": "RESERVED"}
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(dev.wait(), 60)

        # Run as root, the cluster may live outside the data dir (src/slotengine/root_postgres.py).
        shutil.rmtree(relocated_cluster(data_dir / "postgres"), ignore_errors=True)

    assert code == 0
    leftovers = await _until_gone(data_dir)
    assert leftovers == [], leftovers
    assert [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []


async def _until_gone(data_dir: Path) -> list[psutil.Process]:
    # The children were stopped and waited for before dev exited; give the kernel a moment
    # to reap anything that was already dying, and no more.
    for _ in range(50):
        left = [p for p in processes_using(data_dir) if p.status() != psutil.STATUS_ZOMBIE]
        if not left:
            return []
        await asyncio.sleep(0.1)
    return left
