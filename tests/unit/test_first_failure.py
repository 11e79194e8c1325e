"""A state machine's first failure is reported as it happened, even when Hypothesis's replay of
its example goes another way (the model test's rules ask real servers, which may not fail twice)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from tests.first_failure import FirstFailure, watched

QUICK = settings(max_examples=20, stateful_step_count=5, database=None, derandomize=True, deadline=None)


def run_reporting(machine: type[RuleBasedStateMachine], first_failure: FirstFailure) -> None:
    """As the model test runs its machine: whatever Hypothesis says, the first failure wins."""
    outcome: BaseException | None = None
    try:
        run_state_machine_as_test(machine, settings=QUICK)
    except Exception as error:
        outcome = error
    first_failure.reraise(outcome)


def test_a_failure_that_does_not_happen_again_on_replay_is_reported_with_its_steps() -> None:
    first_failure = FirstFailure()
    calls: list[int] = []

    class OnceFailing(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.first_failure = first_failure
            self.trace: list[str] = []

        def describe(self) -> str:
            return f"  calls {len(calls)}"

        @rule(data=st.data(), size=st.integers(1, 3))
        @watched
        def step(self, data: st.DataObject, size: int) -> None:
            data.draw(st.integers(0, size), label="drawn")
            calls.append(size)
            assert len(calls) != 3, "the third call fails, once"

    with pytest.raises(AssertionError) as raised:
        run_reporting(OnceFailing, first_failure)
    report = str(raised.value)
    assert report.startswith("first failure, in step:")
    assert "the third call fails, once" in report
    assert report.count("step(size=") == 3 and "drawn: " in report and "calls 3" in report


def test_draws_that_depend_on_more_than_the_choices_are_reported_where_they_diverged() -> None:
    first_failure = FirstFailure()
    runs: list[int] = []

    class Diverging(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.first_failure = first_failure
            self.trace: list[str] = []
            runs.append(len(runs))

        def describe(self) -> str:
            return f"  run {runs[-1]}"

        @rule(data=st.data())
        @watched
        def step(self, data: st.DataObject) -> None:
            # A different range in every run, as a model ordered by fresh ids would have.
            data.draw(st.integers(0, runs[-1] % 2 + 1), label="number")

    with pytest.raises(AssertionError) as raised:
        run_reporting(Diverging, first_failure)
    report = str(raised.value)
    assert report.startswith("first failure, in step's draws:") and "FlakyStrategyDefinition" in report


def test_a_run_without_failures_passes() -> None:
    first_failure = FirstFailure()

    class Quiet(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.first_failure = first_failure
            self.trace: list[str] = []

        def describe(self) -> str:
            return ""

        @rule()
        @watched
        def step(self) -> None:
            pass

    run_reporting(Quiet, first_failure)
    assert first_failure.report is None
