"""Leader election decisions (docrelay.reconcile.lease): who acts, when a lease has expired by
this process's own clock, what a claim or a release writes; and what a standby serves
(docrelay.standby)."""

from __future__ import annotations

import socket
import threading
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from docrelay import standby
from docrelay.reconcile.lease import (
    WEBHOOK_ANNOTATION,
    Seen,
    Timing,
    claimed,
    next_step,
    observe,
    released,
    webhook_endpoint,
    webhook_target,
)

AT = datetime(2026, 12, 6, 7, 0, 0, 123456, tzinfo=UTC)


def lease(holder: str, renewed: str = "2026-12-06T07:00:00.000000Z", duration: int = 8) -> Any:
    return {
        "metadata": {"name": "docrelay-operator", "resourceVersion": "7"},
        "spec": {
            "holderIdentity": holder,
            "renewTime": renewed,
            "leaseDurationSeconds": duration,
            "leaseTransitions": 2,
        },
    }


def test_no_lease_is_created_and_ones_own_is_renewed() -> None:
    assert next_step(None, "me", None, 0.0) == "create"
    assert next_step(lease("me"), "me", None, 0.0) == "renew"


def test_a_given_back_lease_is_free_at_once() -> None:
    record = lease("")
    assert next_step(record, "me", observe(None, record, 100.0), 100.0) == "take"


def test_another_holder_waits_out_a_full_duration_from_first_sight() -> None:
    record = lease("other")
    seen = observe(None, record, 100.0)
    # The renewTime says nothing (another machine's clock): only this process's clock counts.
    assert next_step(record, "me", None, 1000.0) == "wait"
    assert next_step(record, "me", seen, 107.9) == "wait"
    assert next_step(record, "me", seen, 108.0) == "take"


def test_a_renewal_restarts_the_wait() -> None:
    first = lease("other", "2026-12-06T07:00:00.000000Z")
    seen = observe(None, first, 100.0)
    renewed = lease("other", "2026-12-06T07:00:02.000000Z")
    seen = observe(seen, renewed, 106.0)
    assert seen == Seen("other", "2026-12-06T07:00:02.000000Z", 106.0)
    assert next_step(renewed, "me", seen, 110.0) == "wait"
    assert next_step(renewed, "me", seen, 114.0) == "take"
    # Unchanged: the first sight stays.
    assert observe(seen, renewed, 113.0) is seen


def test_a_new_holder_is_not_taken_over_on_an_old_sighting() -> None:
    seen = observe(None, lease("first"), 100.0)
    assert next_step(lease("second"), "me", seen, 200.0) == "wait"


def test_a_claim_counts_transitions_and_keeps_acquire_time_on_renewal() -> None:
    timing = Timing()
    created = claimed(None, "me", timing, AT)
    assert created == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 8,
        "acquireTime": "2026-12-06T07:00:00.123456Z",
        "renewTime": "2026-12-06T07:00:00.123456Z",
        "leaseTransitions": 0,
    }
    taken = claimed(lease("other"), "me", timing, AT)
    assert taken["holderIdentity"] == "me" and taken["leaseTransitions"] == 3
    assert taken["acquireTime"] == taken["renewTime"]
    mine = {"spec": {**taken, "acquireTime": "2026-12-06T06:00:00.000000Z"}}
    renewed = claimed(mine, "me", timing, AT)
    assert renewed["acquireTime"] == "2026-12-06T06:00:00.000000Z"
    assert renewed["leaseTransitions"] == 3


def test_a_release_leaves_no_holder() -> None:
    spec = released(lease("me"), AT)
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 2


def test_timings_that_could_make_two_leaders_are_refused() -> None:
    with pytest.raises(ValueError):
        Timing(duration=5, renew_deadline=5)
    with pytest.raises(ValueError):
        Timing(renew_every=3, retry=4)


def test_the_holders_webhook_address_is_what_standbys_relay_to() -> None:
    record = lease("other")
    record["metadata"]["annotations"] = {WEBHOOK_ANNOTATION: webhook_endpoint("10.0.0.7", 9443)}
    assert webhook_target(record) == ("10.0.0.7", 9443)
    record["metadata"]["annotations"] = {WEBHOOK_ANNOTATION: webhook_endpoint("fd00::7", 9443)}
    assert webhook_target(record) == ("fd00::7", 9443)
    # Given back, or never said: nowhere to relay to.
    assert webhook_target(lease("")) is None
    assert webhook_target(lease("other")) is None
    assert webhook_target(None) is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_standby_answers_liveness_and_relays_the_webhook_port() -> None:
    """docrelay.standby against local sockets: /healthz is 200, and bytes sent to the webhook
    port reach the active process's address and come back unchanged."""
    active = socket.create_server(("127.0.0.1", 0))
    active_port = active.getsockname()[1]

    def echo() -> None:
        conn, _ = active.accept()
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    health, webhook = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
    target: list[tuple[str, int] | None] = [("127.0.0.1", active_port)]
    with standby.serving(health, webhook, lambda: target[0]):
        answer = urllib.request.urlopen(f"http://127.0.0.1:{health[1]}/healthz", timeout=5)
        assert answer.status == 200
        with socket.create_connection(webhook, timeout=5) as conn:
            conn.sendall(b"\x16\x03\x01 a TLS hello, passed through unopened")
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(1024):
                received += chunk
        assert received == b"\x16\x03\x01 a TLS hello, passed through unopened"
        target[0] = None  # the active process gone: the connection is closed, nothing relayed
        with socket.create_connection(webhook, timeout=5) as conn:
            assert conn.recv(1024) == b""
    active.close()
    # Afterwards the port is free for this process's own webhook server.
    socket.create_server(webhook).close()
