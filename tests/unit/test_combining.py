"""Combining: requests for one key that arrive while a batch runs make up the next batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from slotengine.service.combining import Combiner


class Recorder:
    """A batch runner that records its batches and waits for a gate before answering."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, key: str, requests: Sequence[int]) -> list[int | BaseException]:
        self.batches.append((key, list(requests)))
        self.started.set()
        await self.gate.wait()
        return [ValueError(n) if n < 0 else n * 10 for n in requests]


async def test_a_lone_request_runs_at_once_alone() -> None:
    combiner: Combiner[str, int, int] = Combiner()
    recorder = Recorder()
    recorder.gate.set()
    assert await combiner.submit("a", 1, recorder.run) == 10
    assert recorder.batches == [("a", [1])]


async def test_requests_arriving_during_a_batch_run_together_next_in_arrival_order() -> None:
    combiner: Combiner[str, int, int] = Combiner()
    recorder = Recorder()
    first = asyncio.ensure_future(combiner.submit("a", 1, recorder.run))
    await recorder.started.wait()
    rest = [asyncio.ensure_future(combiner.submit("a", n, recorder.run)) for n in range(2, 7)]
    other = asyncio.ensure_future(combiner.submit("b", 9, recorder.run))  # another key: its own batch
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await first == 10
    assert [await r for r in rest] == [20, 30, 40, 50, 60]
    assert await other == 90
    assert sorted(recorder.batches) == [("a", [1]), ("a", [2, 3, 4, 5, 6]), ("b", [9])]


async def test_a_refusal_reaches_only_its_own_request() -> None:
    combiner: Combiner[str, int, int] = Combiner()
    recorder = Recorder()
    blocker = asyncio.ensure_future(combiner.submit("a", 0, recorder.run))
    await recorder.started.wait()
    good, bad = combiner.submit("a", 2, recorder.run), combiner.submit("a", -1, recorder.run)
    both = asyncio.gather(good, bad, return_exceptions=True)
    await asyncio.sleep(0)
    recorder.gate.set()
    await blocker
    answers = await both
    assert answers[0] == 20 and isinstance(answers[1], ValueError)


async def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_still_runs() -> None:
    combiner: Combiner[str, int, int] = Combiner()
    calls = 0

    async def flaky(key: str, requests: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        return list(requests)

    results = await asyncio.gather(
        combiner.submit("a", 1, flaky), combiner.submit("a", 2, flaky), return_exceptions=True
    )
    assert isinstance(results[0], ConnectionError)
    assert results[1] == 2 or isinstance(results[1], ConnectionError)
    assert await combiner.submit("a", 3, flaky) == 3


async def test_batches_are_capped() -> None:
    combiner: Combiner[str, int, int] = Combiner(max_batch=2)
    recorder = Recorder()
    blocker = asyncio.ensure_future(combiner.submit("a", 0, recorder.run))
    await recorder.started.wait()
    waiting = [asyncio.ensure_future(combiner.submit("a", n, recorder.run)) for n in range(1, 6)]
    await asyncio.sleep(0)
    recorder.gate.set()
    await blocker
    assert [await w for w in waiting] == [10, 20, 30, 40, 50]
    assert [len(batch) for _, batch in recorder.batches] == [1, 2, 2, 1]
