"""The gateway's delivery history (docrelay.gateway.deliveries) and `docrelay events`' table,
without a cluster; tests/cluster/test_send_events.py runs them against a real gateway."""

from __future__ import annotations

import json

from docrelay.cli.events_cmd import rows
from docrelay.gateway.deliveries import (
    KEEP_DELIVERIES,
    KEEP_REFUSALS,
    Delivery,
    DeliveryLog,
    merged,
)


def delivery(n: int, outcome: str = "accepted", reason: str = "created") -> Delivery:
    return Delivery(
        time=f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}.000Z",
        format="resthook",
        outcome=outcome,
        reason=reason,
        event="document.parse.completed",
        document=f"doc{n}",
        workspace="ws",
        document_type="dt",
        runs=(f"orders-{n}",) if outcome == "accepted" else (),
    )


def test_history_is_bounded_and_a_flood_of_refusals_cannot_push_deliveries_out() -> None:
    history = DeliveryLog(kube=None, replica="gw-1")
    for n in range(KEEP_DELIVERIES + 50):
        history.add("team", delivery(n))
    for n in range(KEEP_REFUSALS * 3):
        moment = f"2027-01-01T00:00:{n % 60:02d}.000Z"
        history.add("team", Delivery(moment, "resthook", "refused", "signature"))
    entries = history.entries("team")
    accepted = [e for e in entries if e.outcome == "accepted"]
    assert len(accepted) == KEEP_DELIVERIES
    assert accepted[0].document == "doc50"  # the oldest went first
    assert len([e for e in entries if e.outcome == "refused"]) == KEEP_REFUSALS
    assert history.entries("other") == []


def test_an_entry_holds_identifiers_only() -> None:
    assert delivery(1).to_json() == {
        "time": "2026-01-01T00:00:01.000Z",
        "format": "resthook",
        "outcome": "accepted",
        "reason": "created",
        "event": "document.parse.completed",
        "document": "doc1",
        "workspace": "ws",
        "document_type": "dt",
        "runs": ["orders-1"],
    }
    refused = Delivery(time="t", format="standard", outcome="refused", reason="stale")
    assert refused.to_json() == {
        "time": "t",
        "format": "standard",
        "outcome": "refused",
        "reason": "stale",
    }


def test_every_replicas_entries_are_merged_oldest_first() -> None:
    data = {
        "gw-1.json": json.dumps([delivery(3).to_json(), delivery(1).to_json()]),
        "gw-2.json": json.dumps([delivery(2).to_json()]),
        "broken.json": "{not json",
    }
    assert [e["document"] for e in merged(data)] == ["doc1", "doc2", "doc3"]


def test_the_table_says_why_in_words() -> None:
    entries = [
        delivery(1).to_json(),
        delivery(2, "unmatched", "no_integration").to_json(),
        {"time": "t", "format": "resthook", "outcome": "refused", "reason": "signature"},
        {"time": "u", "format": "resthook", "outcome": "refused", "reason": "stale"},
        {**delivery(3).to_json(), "runs": [], "existing": 2, "reason": "duplicate"},
    ]
    table = rows(entries)
    assert table[0][-2:] == ["runs created", "orders-1"]
    assert table[1][-2].startswith("unmatched: no Integration for this workspace")
    assert table[2][1:5] == ["-", "-", "-", "-"]
    assert table[2][-2].startswith("signature missing or wrong")
    assert table[3][-2].startswith("timestamp outside the tolerance")
    assert table[4][-2:] == ["a redelivery: its runs existed already", "(2 existed)"]
