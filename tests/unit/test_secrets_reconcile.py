"""IntegrationSecret decisions: sealing at admission, Active/Superseded, a condition per error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docrelay.builders.sealing import SEQUENCE_ANNOTATION
from docrelay.models.secret import SecretState
from docrelay.reconcile.secrets import (
    LAST_APPLIED_ANNOTATION,
    PlaintextRefused,
    RunUse,
    SequenceRefused,
    check_sequence,
    newest_first,
    next_sequence,
    openable_values,
    plan_prunes,
    plan_secret_statuses,
    refuse_stored_plaintext,
    seal_plaintext,
    secret_info,
    stamp_patch,
    status_patch,
    usable_secret_keys,
)
from docrelay.sealing import Binding, KeyRing
from tests.leakcheck import assert_clean, canary

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CANARY = canary()


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing.create()


def obj(
    name: str,
    *,
    ring: KeyRing | None = None,
    created: datetime = NOW,
    namespace: str = "tenant-a",
    integration: str = "orders",
    key: str = "API_KEY",
    sealed_for: Binding | None = None,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    sequence: int | None = None,
) -> dict[str, Any]:
    if spec is None:
        assert ring is not None
        binding = sealed_for or Binding(namespace, integration, key)
        sealed, key_id = ring.seal(binding, CANARY.encode())
        spec = {"encryptedValue": sealed, "keyId": key_id}
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "generation": 1,
            "creationTimestamp": created.isoformat().replace("+00:00", "Z"),
            "annotations": {} if sequence is None else {SEQUENCE_ANNOTATION: str(sequence)},
        },
        "spec": {"integration": integration, "key": key, **spec},
        "status": status,
    }


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def plan(ring: KeyRing | None, *objects: dict[str, Any]) -> dict[str, Any]:
    planned = plan_secret_statuses([secret_info(o) for o in objects], ring, NOW)
    return {
        n: s.model_dump(mode="json", by_alias=True, exclude_none=True) for n, s in planned.items()
    }


def cond(status: dict[str, Any], kind: str) -> tuple[str, str]:
    found = next(c for c in status["conditions"] if c["type"] == kind)
    return found["status"], found["reason"]


def test_newest_is_active_older_superseded(ring: KeyRing) -> None:
    old = obj("a-old", ring=ring, created=NOW - timedelta(hours=1))
    new = obj("b-new", ring=ring, created=NOW)
    statuses = plan(ring, old, new)
    assert statuses["b-new"]["state"] == SecretState.ACTIVE
    assert cond(statuses["b-new"], "Ready") == ("True", "Sealed")
    assert statuses["a-old"]["state"] == SecretState.SUPERSEDED
    assert statuses["a-old"]["supersededBy"] == "b-new"
    assert cond(statuses["a-old"], "Ready") == ("False", "Superseded")
    assert cond(statuses["a-old"], "Sealed") == ("True", "Opened")
    # Same value, same place: the same fingerprint; the value itself is nowhere.
    assert statuses["a-old"]["fingerprint"] == statuses["b-new"]["fingerprint"]
    assert_clean(json.dumps(statuses), [CANARY], "the statuses")


def test_same_second_the_later_name_wins(ring: KeyRing) -> None:
    statuses = plan(ring, obj("x-2", ring=ring), obj("x-1", ring=ring))
    assert statuses["x-2"]["state"] == "Active"
    assert statuses["x-1"]["supersededBy"] == "x-2"


# --- the order of one key's secrets: the admission sequence ------------------------------------

# (name, seconds after NOW it was created, nanoseconds after NOW it was admitted or None);
# each case lists the secrets oldest first, so the last one must be Active. Names are chosen
# so that the old order (creationTimestamp, then name) picks another one.
ORDER_CASES = {
    "same second, the later admission wins over a later name": [
        ("z-first", 0, 100),
        ("a-second", 0, 200),
    ],
    "three in one second, admitted in reverse name order": [
        ("c", 0, 1),
        ("b", 0, 2),
        ("a", 0, 3),
    ],
    "an unstamped secret (before the upgrade) loses to one stamped in its second": [
        ("z-old", 0, None),
        ("a-new", 0, 5),
    ],
    "an unstamped secret wins over one stamped in an earlier second": [
        ("a-stamped", -1, 10),
        ("b-unstamped", 0, None),
    ],
    "unstamped ones order by creation time, then name": [
        ("b-older", -5, None),
        ("a-newer", -4, None),
    ],
}


@pytest.mark.parametrize("case", list(ORDER_CASES), ids=list(ORDER_CASES))
def test_the_latest_admission_is_active(ring: KeyRing, case: str) -> None:
    objects = [
        obj(
            name,
            ring=ring,
            created=NOW + timedelta(seconds=second),
            sequence=None if offset is None else ns(NOW + timedelta(seconds=second)) + offset,
        )
        for name, second, offset in ORDER_CASES[case]
    ]
    ordered = [s.name for s in newest_first(secret_info(o) for o in objects)]
    assert ordered == [name for name, _, _ in reversed(ORDER_CASES[case])]
    statuses = plan(ring, *objects)
    newest = ORDER_CASES[case][-1][0]
    assert statuses[newest]["state"] == "Active"
    for name, _, _ in ORDER_CASES[case][:-1]:
        assert statuses[name]["supersededBy"] == newest


def test_the_order_is_total_and_ignores_input_order(ring: KeyRing) -> None:
    objects = [
        obj(f"s-{i}", ring=ring, sequence=ns(NOW) + (i * 7) % 5 if i % 3 else None)
        for i in range(9)
    ]
    first = [s.name for s in newest_first(secret_info(o) for o in objects)]
    again = [s.name for s in newest_first(secret_info(o) for o in reversed(objects))]
    assert first == again and len(set(first)) == 9


@pytest.mark.parametrize("text", ["", "-5", "12a", "1e9", "9" * 40, "²", "١٢"])
def test_an_unreadable_sequence_counts_as_none(ring: KeyRing, text: str) -> None:
    secret = obj("x", ring=ring)
    secret["metadata"]["annotations"] = {SEQUENCE_ANNOTATION: text}
    assert secret_info(secret).sequence is None


@pytest.mark.parametrize(
    ("last", "clock", "expected"),
    [
        (0, 1_000, 1_000),  # the wall clock
        (1_000, 1_000, 1_001),  # the same nanosecond twice
        (5_000, 1_000, 5_001),  # the clock went back
    ],
)
def test_next_sequence_strictly_increases(last: int, clock: int, expected: int) -> None:
    assert next_sequence(last, clock) == expected


def test_stamp_overwrites_what_a_user_wrote_on_create() -> None:
    forged = {"metadata": {"annotations": {SEQUENCE_ANNOTATION: "9" * 25}}}
    assert stamp_patch("CREATE", forged, None, lambda: 42) == {SEQUENCE_ANNOTATION: "42"}
    assert stamp_patch("CREATE", {"metadata": {}}, None, lambda: 43) == {SEQUENCE_ANNOTATION: "43"}


def test_stamp_puts_back_a_removed_sequence_and_issues_none_on_update() -> None:
    def never() -> int:
        raise AssertionError("an UPDATE never gets a new sequence")

    stored = {"metadata": {"annotations": {SEQUENCE_ANNOTATION: "7"}}}
    removed: dict[str, Any] = {"metadata": {"annotations": {"team": "a"}}}
    assert stamp_patch("UPDATE", removed, stored, never) == {SEQUENCE_ANNOTATION: "7"}
    assert stamp_patch("UPDATE", stored, stored, never) is None
    assert stamp_patch("UPDATE", removed, {"metadata": {}}, never) is None  # never had one


@pytest.mark.parametrize(
    ("operation", "new", "old", "refused"),
    [
        ("CREATE", "42", None, False),  # issued by this process
        ("CREATE", None, None, False),  # stamp skipped (operator was down): no sequence at all
        ("CREATE", "999999999999999999999", None, True),  # a user's value got past the stamp
        ("UPDATE", "42", "42", False),
        ("UPDATE", "43", "42", True),  # changed
        ("UPDATE", None, "42", True),  # removed
        ("UPDATE", "42", None, True),  # added to a secret stamped before the upgrade
        ("UPDATE", None, None, False),
    ],
)
def test_guard_refuses_a_sequence_that_is_not_ours(
    operation: str, new: str | None, old: str | None, refused: bool
) -> None:
    def body(value: str | None) -> dict[str, Any]:
        return {"metadata": {"annotations": {} if value is None else {SEQUENCE_ANNOTATION: value}}}

    check = lambda: check_sequence(  # noqa: E731
        operation, body(new), None if operation == "CREATE" else body(old), {"42"}.__contains__
    )
    if refused:
        with pytest.raises(SequenceRefused, match="cannot be set or changed"):
            check()
    else:
        check()


# --- pruning ----------------------------------------------------------------------------------

GRACE = timedelta(hours=24)


def checked_objects(ring: KeyRing, *objects: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects with the statuses the operator writes (as pruning reads them)."""
    statuses = plan(ring, *objects)
    for o in objects:
        o["status"] = statuses[o["metadata"]["name"]]
    return list(objects)


def history(ring: KeyRing, superseded_ago: timedelta) -> list[dict[str, Any]]:
    """Three secrets of one key; the newest was created `superseded_ago` before NOW."""
    newest = NOW - superseded_ago
    return checked_objects(
        ring,
        obj("v1", ring=ring, created=newest - timedelta(hours=2), sequence=1),
        obj("v2", ring=ring, created=newest - timedelta(hours=1), sequence=2),
        obj("v3", ring=ring, created=newest, sequence=3),
    )


def prunes(objects: list[dict[str, Any]], runs: list[RunUse] | None = None) -> list[str]:
    planned = plan_prunes([secret_info(o) for o in objects], runs or [], NOW, GRACE)
    return sorted(p.name for p in planned)


def test_superseded_secrets_go_after_the_grace_period(ring: KeyRing) -> None:
    assert prunes(history(ring, GRACE + timedelta(seconds=1))) == ["v1", "v2"]
    # v2 was superseded 1 h before v3 came: only v1 has been superseded for the whole grace.
    assert prunes(history(ring, GRACE - timedelta(minutes=30))) == ["v1"]
    assert prunes(history(ring, timedelta(minutes=1))) == []


def test_a_secret_an_unfinished_run_received_stays(ring: KeyRing) -> None:
    objects = history(ring, GRACE * 2)
    running = RunUse("orders", finished=False, secrets=frozenset({"v1"}))
    assert prunes(objects, [running]) == ["v2"]
    # Finished, or another integration's: no longer holds it.
    done = RunUse("orders", finished=True, secrets=frozenset({"v1", "v2"}))
    other = RunUse("billing", finished=False, secrets=frozenset({"v1", "v2"}))
    assert prunes(objects, [done, other]) == ["v1", "v2"]


def test_nothing_goes_while_the_active_secret_does_not_open(ring: KeyRing) -> None:
    objects = checked_objects(
        ring,
        obj("v1", ring=ring, created=NOW - 3 * GRACE, sequence=1),
        obj(
            "v2", created=NOW - 2 * GRACE, sequence=2, spec={"encryptedValue": "bm90", "keyId": "k"}
        ),
    )
    assert prunes(objects) == []
    # Nor before the operator has checked the newest one.
    unchecked = history(ring, 2 * GRACE)
    unchecked[-1]["status"] = None
    assert prunes(unchecked) == []


def test_the_prune_event_names_names_and_fingerprints_only(ring: KeyRing) -> None:
    objects = history(ring, 2 * GRACE)
    planned = plan_prunes([secret_info(o) for o in objects], [], NOW, GRACE)
    message = next(p for p in planned if p.name == "v1").message(GRACE)
    fingerprint = objects[0]["status"]["fingerprint"]
    assert message == (
        f"deleted the superseded IntegrationSecret v1 (key API_KEY, fingerprint {fingerprint}): "
        f"superseded by v3 (fingerprint {fingerprint}) for over 1d, and no unfinished run "
        "received it"
    )
    assert_clean(message, [CANARY], "the message")


def test_other_keys_and_integrations_are_separate_groups(ring: KeyRing) -> None:
    statuses = plan(
        ring,
        obj("a", ring=ring),
        obj("b", ring=ring, key="TOKEN"),
        obj("c", ring=ring, integration="billing"),
    )
    assert {s["state"] for s in statuses.values()} == {"Active"}


@pytest.mark.parametrize(
    ("sealed_for", "reason", "advice"),
    [
        (Binding("tenant-b", "orders", "API_KEY"), "BindingMismatch", "seal it again"),
        (Binding("tenant-a", "billing", "API_KEY"), "BindingMismatch", "docrelay seal"),
        (Binding("tenant-a", "orders", "OTHER"), "BindingMismatch", "docrelay seal"),
    ],
)
def test_moved_ciphertext_does_not_open(
    ring: KeyRing, sealed_for: Binding, reason: str, advice: str
) -> None:
    status = plan(ring, obj("moved", ring=ring, sealed_for=sealed_for))["moved"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert advice in ready["message"]
    assert "fingerprint" not in status


def test_tampered_malformed_unknown_key(ring: KeyRing) -> None:
    good = obj("t", ring=ring)
    sealed = good["spec"]["encryptedValue"]
    flipped = sealed[:-8] + ("A" if sealed[-8] != "A" else "B") + sealed[-7:]
    tampered = obj("t", spec={"encryptedValue": flipped, "keyId": good["spec"]["keyId"]})
    malformed = obj("m", key="M", spec={"encryptedValue": "bm90IGEgc2VhbA==", "keyId": "k"})
    foreign = obj("f", key="F", ring=KeyRing.create())
    statuses = plan(ring, tampered, malformed, foreign)
    assert cond(statuses["t"], "Ready") == ("False", "Tampered")
    assert cond(statuses["m"], "Sealed") == ("False", "Malformed")
    assert cond(statuses["f"], "Ready") == ("False", "UnknownKey")
    assert (
        "backup" in next(c for c in statuses["f"]["conditions"] if c["type"] == "Ready")["message"]
    )


def test_plaintext_that_got_stored_and_keys_not_loaded(ring: KeyRing) -> None:
    stored = obj("p", spec={"value": CANARY})
    status = plan(ring, stored)["p"]
    assert cond(status, "Ready") == ("False", "NotSealed")
    assert_clean(json.dumps(status), [CANARY], "the status")
    waiting = plan(None, obj("w", ring=ring))["w"]
    assert cond(waiting, "Ready") == ("Unknown", "KeysUnavailable")


def test_status_patch_is_empty_when_nothing_changed_and_nulls_what_went(ring: KeyRing) -> None:
    first = plan(ring, obj("a", ring=ring, created=NOW - timedelta(hours=1)), obj("b", ring=ring))
    again = plan_secret_statuses(
        [secret_info(obj("a", ring=ring, created=NOW - timedelta(hours=1), status=first["a"]))],
        ring,
        NOW + timedelta(minutes=5),
    )["a"]
    patch = status_patch(first["a"], again)
    assert patch["supersededBy"] is None and patch["state"] == "Active"
    steady = plan_secret_statuses(
        [secret_info(obj("b", ring=ring, status=first["b"]))], ring, NOW + timedelta(minutes=5)
    )["b"]
    # The value was sealed again (new ciphertext), the status is the same: nothing to write.
    assert status_patch(first["b"], steady) == {}


def test_usable_keys_need_an_active_secret_that_opens(ring: KeyRing) -> None:
    statuses = plan(
        ring,
        obj("ok", ring=ring),
        obj("bad", key="BAD", spec={"encryptedValue": "bm90IGEgc2VhbA==", "keyId": "k"}),
    )
    objects = [
        obj("ok", ring=ring, status=statuses["ok"]),
        obj(
            "bad", key="BAD", spec={"encryptedValue": "bm90", "keyId": "k"}, status=statuses["bad"]
        ),
        obj("unchecked", key="NEW", ring=ring),
    ]
    assert usable_secret_keys(objects, "orders") == frozenset({"API_KEY"})
    assert usable_secret_keys(objects, "billing") == frozenset()


# --- admission ----------------------------------------------------------------------------------


def admitted(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "s",
            "namespace": "tenant-a",
            "annotations": annotations or {},
            "labels": {"team": "a", "oops": CANARY[:20]},
        },
        "spec": {"integration": "orders", "key": "API_KEY", **spec},
    }


def test_webhook_seals_and_scrubs_last_applied(ring: KeyRing) -> None:
    applied = json.dumps({"kind": "IntegrationSecret", "spec": {"value": CANARY, "key": "API_KEY"}})
    body = admitted(
        {"value": CANARY},
        {LAST_APPLIED_ANNOTATION: applied, "note": f"was {CANARY}", "team": "a"},
    )
    patch = seal_plaintext(body, "tenant-a", ring, NOW)
    assert patch is not None
    assert patch.spec["value"] is None
    assert patch.spec["keyId"] == ring.newest.key_id
    sealed = patch.spec["encryptedValue"]
    assert sealed is not None
    assert ring.open(Binding("tenant-a", "orders", "API_KEY"), sealed) == CANARY.encode()
    rewritten = json.loads(patch.annotations[LAST_APPLIED_ANNOTATION] or "")
    assert rewritten["spec"] == {
        "encryptedValue": sealed,
        "keyId": ring.newest.key_id,
        "key": "API_KEY",
    }
    assert patch.annotations["note"] is None  # held the value: removed
    assert "team" not in patch.annotations
    assert patch.labels == {}  # a 20-character prefix is not the value
    everything = json.dumps([patch.annotations, patch.labels, patch.spec["keyId"]])
    assert_clean(everything, [CANARY], "the patch")


def test_webhook_leaves_sealed_objects_alone(ring: KeyRing) -> None:
    assert (
        seal_plaintext(admitted({"encryptedValue": "AA==", "keyId": "k"}), "a", ring, NOW) is None
    )


@pytest.mark.parametrize(
    ("spec", "namespace", "has_ring", "message"),
    [
        ({"value": "abc"}, "tenant-a", True, "too short"),
        ({"value": CANARY, "key": ""}, "tenant-a", True, "spec.key are required"),
        ({"value": CANARY}, "", True, "no namespace"),
        ({"value": CANARY}, "tenant-a", False, "not loaded its sealing keys"),
        ({"value": "x" * 40000}, "tenant-a", True, "longer than"),
    ],
)
def test_webhook_refusals_never_quote_the_value(
    ring: KeyRing, spec: dict[str, Any], namespace: str, has_ring: bool, message: str
) -> None:
    with pytest.raises(PlaintextRefused) as refused:
        seal_plaintext(admitted(spec), namespace, ring if has_ring else None, NOW)
    assert message in str(refused.value)
    assert CANARY not in str(refused.value) and "abc" not in str(refused.value)


def test_validating_check_refuses_any_plaintext() -> None:
    with pytest.raises(PlaintextRefused, match="never stored"):
        refuse_stored_plaintext(admitted({"value": CANARY}))
    refuse_stored_plaintext(admitted({"encryptedValue": "AA==", "keyId": "k"}))


def test_a_chat_masker_gets_every_value_that_opens_whatever_its_state(ring: KeyRing) -> None:
    """What the conversations mask with: a secret set a moment ago (no status yet), an Active
    one and a Superseded one of another integration all open; one sealed for another install
    is skipped, not an error that would stop every chat."""
    pending = obj("new", ring=ring)
    active = obj("cur", ring=ring, status={"state": "Active"})
    old = obj("old", ring=ring, integration="other", status={"state": "Superseded"})
    foreign = obj("f", key="F", ring=KeyRing.create())
    values = openable_values(ring, [pending, active, old, foreign])
    assert values == [CANARY.encode()] * 3
