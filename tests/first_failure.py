"""The first failure of a stateful Hypothesis run, kept before Hypothesis replays or shrinks it.

A state machine whose rules ask real servers may not fail the same way twice (a race, a timer, a
task that ran a little later); when Hypothesis then replays the failing example to shrink or report
it, the rules' draws can diverge and it reports `FlakyStrategyDefinition` or `FlakyFailure`
instead, with none of the real error. So every rule, invariant and teardown is `watched`: the
first exception raised in it (Hypothesis's own control flow aside) is kept with its traceback and
the steps and draws of its example that led to it, written at once to the file named by
`SLOTENGINE_MODEL_FAILURE_LOG` (if set), and raised plainly at the end of the run by `reraise`.

A `FlakyStrategyDefinition` raised by a rule's draw is kept the same way: it is the test's own
failure (the example drew differently from an earlier one with the same choices, so the model
depends on something besides them), and the steps and model of the run that diverged show where.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition, HypothesisException

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., None])


class FirstFailure:
    """The first real failure seen during a run (and how many followed it)."""

    def __init__(self) -> None:
        self.report: str | None = None
        self.later = 0  # failures after the first (Hypothesis's replays and shrinks)
        log = os.environ.get("SLOTENGINE_MODEL_FAILURE_LOG")
        self.log = Path(log) if log else None

    def keep(self, error: BaseException, where: str, trace: list[str], state: str) -> None:
        if self.report is not None:
            self.later += 1
            return
        self.report = (
            f"first failure, in {where}:\n"
            + "".join(traceback.format_exception(error))
            + "steps of its example, with their draws:\n  "
            + "\n  ".join(trace)
            + f"\nthe model then:\n{state}\n"
        )
        if self.log is not None:
            with self.log.open("a") as log:
                log.write(self.report + "\n")

    def reraise(self, outcome: BaseException | None) -> None:
        """Fail with the first failure, whatever Hypothesis made of it (`outcome`)."""
        if self.report is None:
            if outcome is not None:
                raise outcome
            return
        raise AssertionError(
            f"{self.report}({self.later} failures followed while Hypothesis replayed or shrank it;"
            f" it then reported {outcome!r})"
        ) from outcome


class Watched(Protocol):
    first_failure: FirstFailure
    trace: list[str]

    def describe(self) -> str: ...


class TracedData:
    """Hypothesis's `data` object for a rule, noting each draw in the machine's trace."""

    def __init__(self, data: st.DataObject, trace: list[str]) -> None:
        self._data = data
        self._trace = trace

    def draw(self, strategy: st.SearchStrategy[T], label: Any = None) -> T:
        value = self._data.draw(strategy, label=label)
        self._trace.append(f"    {label or 'drew'}: {value!r}")
        return value


def watched(method: F) -> F:
    """Note the call in the machine's trace; keep its failure if it is the run's first."""

    @functools.wraps(method)
    def run(machine: Watched, *args: Any, **kwargs: Any) -> None:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "data")
        machine.trace.append(f"{method.__name__}({shown})")
        if isinstance(kwargs.get("data"), st.DataObject):
            kwargs["data"] = TracedData(kwargs["data"], machine.trace)
        try:
            method(machine, *args, **kwargs)
        except FlakyStrategyDefinition as error:
            # Not the engine's failure but the test's: this example drew differently from an
            # earlier one with the same choices, so the rules' draws depend on something besides
            # Hypothesis's choices (an answer or an id that differs from run to run).
            machine.first_failure.keep(error, f"{method.__name__}'s draws", machine.trace, machine.describe())
            raise
        except HypothesisException:
            raise  # Hypothesis's own control flow (or its verdict on the draws), not a failure
        except Exception as error:
            machine.first_failure.keep(error, method.__name__, machine.trace, machine.describe())
            raise

    return run  # type: ignore[return-value]
