"""An Integration's spec.egress.cidrs as a NetworkPolicy: the builder and the decision."""

from __future__ import annotations

import copy
import json

import pytest

from docrelay.builders.egress import build_egress_policy
from docrelay.builders.run import RunAttempt, run_labels
from docrelay.reconcile.egress import egress_policy_action


def test_policy_selects_the_integrations_run_pods_and_allows_its_cidrs() -> None:
    policy = build_egress_policy("t", "orders", "uid-1", ["203.0.113.0/24", "10.1.0.0/16"])
    assert policy is not None
    assert policy["metadata"]["name"] == "docrelay-egress-orders"
    (owner,) = policy["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Integration", "orders", "uid-1")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Egress"]  # never restricts ingress; only ever adds egress
    assert spec["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}, {"ipBlock": {"cidr": "203.0.113.0/24"}}]}
    ]
    attempt = RunAttempt(
        namespace="t", run="r", run_uid="u", attempt=1, integration="orders", revision="v",
        code_config_map="c", code_key="handler.py", code_hash="sha256:00", event={},
        idempotency_key="k", timeout_seconds=60,
    )  # fmt: skip
    selector = spec["podSelector"]["matchLabels"]
    assert selector.items() <= run_labels(attempt).items()
    other = RunAttempt(**{**attempt.__dict__, "integration": "invoices"})
    assert not selector.items() <= run_labels(other).items()  # another Integration's pods
    assert build_egress_policy("t", "orders", "uid-1", []) is None


WANTED = build_egress_policy("t", "orders", "uid-1", ["203.0.113.0/24"])
assert WANTED is not None


def changed(path: tuple[str, ...], value: object) -> dict:
    body = copy.deepcopy(WANTED)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("wanted", "existing", "action"),
    [
        (None, None, "none"),
        (WANTED, None, "create"),
        (None, WANTED, "delete"),
        (WANTED, copy.deepcopy(WANTED), "none"),
        (WANTED, changed(("spec", "egress"), []), "replace"),  # cidrs changed
        (WANTED, changed(("metadata", "labels"), {}), "replace"),
        (WANTED, changed(("metadata", "ownerReferences"), [{"uid": "old"}]), "replace"),
        # What the API server adds (defaults, other labels) is no reason to write.
        (WANTED, changed(("metadata", "labels", "extra"), "x"), "none"),
    ],
)
def test_policy_action(wanted: dict | None, existing: dict | None, action: str) -> None:
    assert egress_policy_action(wanted, existing) == action


def test_a_record_is_counted_for_the_runs_status() -> None:
    from docrelay.reconcile.egress import egress_summary

    parts = {
        "gw-a.json": json.dumps(
            {"connections": 3, "denied": 1, "bytesOut": 500, "bytesIn": 9, "entries": []}
        ),
        "gw-b.json": json.dumps({"connections": 2, "denied": 0, "bytesOut": 10, "bytesIn": 1}),
        "broken.json": "{not json",
    }
    summary = egress_summary(parts)
    assert summary is not None
    assert summary.model_dump(by_alias=True) == {
        "connections": 5, "denied": 1, "bytesOut": 510, "bytesIn": 10
    }  # fmt: skip
    assert egress_summary(None) is None and egress_summary({}) is None
