"""The collector policy: freeze as subscriptions start, collect once a quarter of them left."""

from __future__ import annotations

from slotengine.api.gc_policy import MIN_DEPARTURES, CollectOnDepartures


def _policy(calls: list[str]) -> CollectOnDepartures:
    return CollectOnDepartures(
        freeze=lambda: calls.append("freeze"),
        unfreeze=lambda: calls.append("unfreeze"),
        collect=lambda: calls.append("collect"),
    )


def test_every_subscription_start_freezes_and_nothing_is_collected_while_they_stay() -> None:
    calls: list[str] = []
    policy = _policy(calls)
    for _ in range(1000):
        policy.subscription_started()
    assert calls == ["freeze"] * 1000


def test_the_frozen_heap_is_collected_once_a_quarter_of_the_peak_has_left() -> None:
    calls: list[str] = []
    policy = _policy(calls)
    for _ in range(1000):
        policy.subscription_started()
    calls.clear()
    for _ in range(249):
        policy.subscription_ended()
    assert calls == []
    policy.subscription_ended()
    assert calls == ["unfreeze", "collect", "freeze"]
    assert (policy.live, policy.peak, policy.departed) == (750, 750, 0)


def test_few_listeners_coming_and_going_are_collected_every_hundred_departures() -> None:
    calls: list[str] = []
    policy = _policy(calls)
    for _ in range(10 * MIN_DEPARTURES):
        policy.subscription_started()
        policy.subscription_ended()
    assert calls.count("collect") == 10 and policy.live == 0
