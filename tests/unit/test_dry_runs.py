"""Dry runs and the broker's record of actions (gateway/dryrun.py): the simulated answers are
marked, and the operator reads the records where the gateway writes them."""

from __future__ import annotations

import json

from docrelay.builders.run import broker_record_name, egress_record_name
from docrelay.gateway.broker import Caller
from docrelay.gateway.dryrun import (
    BROKER_RECORD_SUFFIX,
    ActionRecord,
    BrokerAction,
    is_dry_stop,
    simulated_action,
    simulated_http_response,
    simulated_request,
    simulated_upload,
    tunnel_stopped_reason,
    writes,
)
from docrelay.gateway.proxy import Recorder, record_config_map_name
from docrelay.naming import job_name

CALLER = Caller(
    "ns", "pod", "pod-uid", "bills-1", "bills", "run-uid", 1, "bills", "doc", True, True
)


def test_writes_are_every_method_but_the_reads() -> None:
    methods = ("GET", "head", "OPTIONS", "POST", "put", "PATCH", "DELETE")
    assert [m for m in methods if writes(m)] == ["POST", "put", "PATCH", "DELETE"]


def test_simulated_answers_are_marked_and_name_no_query() -> None:
    posted = simulated_request("post", "https://api.example.com/bills?token=secret")
    assert posted["success"] is True and posted["dry_run"] is True
    assert posted["data"]["simulated"] == "POST api.example.com/bills: dry run: simulated, not sent"
    assert "secret" not in json.dumps(posted)
    assert simulated_action("xero-create-bill")["result"]["ret"]["dryRun"] is True
    assert simulated_upload("a b.pdf")["url"] == (
        "https://dry-run.docrelay.invalid/not-stored/a%20b.pdf"
    )
    head, _, body = simulated_http_response("POST", "ledger.test", 80).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"X-Docrelay-Dry-Run: simulated" in head
    assert json.loads(body)["dryRun"] is True
    reason = tunnel_stopped_reason("erp.test", 443)
    assert is_dry_stop(reason) and '"' not in reason and not is_dry_stop("erp.test:443 denied")


def test_the_operator_reads_the_records_where_the_gateway_writes_them() -> None:
    job = job_name("bills", 1)
    assert egress_record_name("bills", 1) == record_config_map_name(job)
    actions = Recorder(
        None, 5, suffix=BROKER_RECORD_SUFFIX, component="broker-record", make=ActionRecord
    )
    actions.add(CALLER, BrokerAction(0.0, "execute_action", "xero", "simulated", True, tool="t"))
    actions.add(
        CALLER,
        BrokerAction.request(0.0, "xero", "get", "https://api.x.test/a?k=v", True),
    )
    manifest = actions.manifest(actions.records[("ns", "bills-1")])
    assert manifest["metadata"]["name"] == broker_record_name("bills", 1) == "bills-1-broker"
    assert manifest["metadata"]["labels"]["app.kubernetes.io/component"] == "broker-record"
    (part,) = [json.loads(v) for v in manifest["data"].values()]
    assert (part["actions"], part["simulated"], part["dropped"]) == (2, 1, 0)
    assert part["entries"][1]["path"] == "/a" and "k=v" not in json.dumps(part)
