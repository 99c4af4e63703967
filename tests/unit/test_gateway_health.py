"""The gateway's readiness (`/readyz`): answered from what the watch and the API calls
reported, never from a call per probe (docrelay.gateway.health)."""

from __future__ import annotations

from docrelay.gateway.health import ApiHealth, Readiness


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live(clock: Clock) -> ApiHealth:
    health = ApiHealth(clock=clock, stale_seconds=30, heartbeat_seconds=10)
    health.watch_live()
    return health


def test_not_ready_before_the_index_is_loaded() -> None:
    health = ApiHealth(clock=Clock())
    assert health.readiness(index_synced=False) == Readiness(
        False, "integration index not loaded yet", None
    )
    health.succeeded()  # a call answered, but no list yet: the watch has not started
    state = health.readiness(index_synced=True)
    assert (state.ready, state.reason) == (False, "integration watch not started; relisting")


def test_ready_while_the_watch_is_live_and_calls_succeed() -> None:
    clock = Clock()
    health = live(clock)
    clock.now += 5
    assert health.readiness(index_synced=True) == Readiness(True, "", 5.0)


def test_a_failed_call_makes_it_unready_until_a_call_succeeds() -> None:
    clock = Clock()
    health = live(clock)
    health.failed("API server unreachable (ConnectError)")
    assert health.readiness(True) == Readiness(False, "API server unreachable (ConnectError)", 0)
    assert health.needs_heartbeat()  # so the heartbeat finds out when it is back
    clock.now += 1
    health.succeeded()
    assert health.readiness(True).ready


def test_the_later_report_wins_even_at_the_same_clock_time() -> None:
    clock = Clock()
    health = live(clock)
    health.succeeded()
    health.failed("API server answered 503")
    assert not health.readiness(True).ready
    health.succeeded()
    assert health.readiness(True).ready


def test_a_broken_watch_is_unready_until_it_has_relisted() -> None:
    clock = Clock()
    health = live(clock)
    health.watch_broken("integration watch interrupted (ProtocolError)")
    assert health.readiness(True).reason == (
        "integration watch interrupted (ProtocolError); relisting"
    )
    health.succeeded()  # a create went through, but the index may be missing changes
    assert health.readiness(True).reason.startswith("integration watch interrupted")
    health.watch_live()
    assert health.readiness(True).ready


def test_staleness_is_bounded_even_if_nothing_reports() -> None:
    clock = Clock()
    health = live(clock)
    clock.now += 30
    assert health.readiness(True).ready
    clock.now += 1
    assert health.readiness(True) == Readiness(
        False, "no successful API server call for over 30 s", 31.0
    )


def test_heartbeat_only_when_nothing_else_talked_to_the_api_server() -> None:
    clock = Clock()
    health = live(clock)
    assert not health.needs_heartbeat()
    clock.now += 9.5
    assert not health.needs_heartbeat()
    clock.now += 0.5
    assert health.needs_heartbeat()
    health.succeeded()  # a delivery's create: no heartbeat needed for another 10 s
    assert not health.needs_heartbeat()
