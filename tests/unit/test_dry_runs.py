"""Dry runs and the broker's record of actions (gateway/dryrun.py): the simulated answers are
marked, and the operator reads the records where the gateway writes them."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, ClassVar
from urllib.parse import quote

from docrelay.builders.run import broker_record_name, egress_record_name
from docrelay.gateway.broker import Caller
from docrelay.gateway.dryrun import (
    BROKER_RECORD_SUFFIX,
    ActionRecord,
    BrokerAction,
    is_dry_stop,
    merge_actions,
    simulated_action,
    simulated_http_response,
    simulated_request,
    simulated_upload,
    tunnel_stopped_reason,
    writes,
)
from docrelay.gateway.egress import (
    FREE_TEXT_FIELDS,
    RECORD_COLLECTED,
    RECORD_OPEN,
    RECORD_STATE_LABEL,
    mask_record_part,
)
from docrelay.gateway.proxy import Recorder, record_config_map_name
from docrelay.handlers.judge import namespace_masker
from docrelay.kube import KubeError
from docrelay.kube.egress import read_masked_record
from docrelay.masking import Masker
from docrelay.naming import job_name
from docrelay.sealing import Binding, KeyRing
from tests.leakcheck import assert_clean, canary
from tests.unit.test_egress import FlushKube

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


def broker_recorder(kube: Any) -> Recorder:
    """A gateway process's Recorder of broker actions (`<job>-broker`), as gateway/app.py
    makes it, keeping 5 entries."""
    return Recorder(
        kube, 5, replica="gw-a", suffix=BROKER_RECORD_SUFFIX, component="broker-record",
        make=ActionRecord,
    )  # fmt: skip


def test_the_operator_reads_the_records_where_the_gateway_writes_them() -> None:
    job = job_name("bills", 1)
    assert egress_record_name("bills", 1) == record_config_map_name(job)
    actions = broker_recorder(None)
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


def test_what_the_code_names_freely_is_masked_or_left_out() -> None:
    """The gateway masks the run's token in an entry (`masked`); after the operator collected
    the record it writes entries without the free text (`paths=False`); the operator masks the
    run's values in each part with the one function of both records (`mask_record_part`), or
    drops the free text when the values could not be opened."""
    value = canary()
    host = f"{value.encode().hex()}.x.test"  # a host name can carry a value too, as hex
    entries = [
        BrokerAction.request(0.0, "xero", "post", f"https://{host}/v1/{quote(value)}/b", True),
        BrokerAction(0.0, "upload_file", f"a-{value}", "simulated", True,
                     file_name=f"bill-{value}.pdf"),
        BrokerAction(0.0, "execute_action", "xero", "sent", False, tool=f"t-{value}",
                     props=(f"p-{value}", "amount")),
    ]  # fmt: skip
    record = ActionRecord()
    for entry in entries:
        record.add(entry.masked(Masker([value]).mask))
    part = record.to_json()
    assert [e.get("path") or e.get("fileName") or e.get("tool") for e in part["entries"]] == [
        "/v1/***/b",
        "bill-***.pdf",
        "t-***",
    ]
    assert part["entries"][2]["props"] == ["p-***", "amount"]
    assert [e["account"] for e in part["entries"]] == ["xero", "a-***", "xero"]
    assert part["entries"][0]["host"] == "***.x.test"
    assert_clean(json.dumps(part), [value], "the gateway's masked entries")

    unmasked = ActionRecord()
    for entry in entries:
        unmasked.add(entry)
    text = json.dumps(unmasked.to_json(), separators=(",", ":"))
    late = unmasked.to_json(paths=False)
    assert late["actions"] == 3 and all(not set(e) & set(FREE_TEXT_FIELDS) for e in late["entries"])
    assert late["entries"][0]["method"] == "POST"  # the host and the account are left out
    assert_clean(json.dumps(late), [value], "the entries written after collection")
    masked = json.loads(mask_record_part(text, Masker([value]).mask))
    assert masked["entries"][0]["host"] == "***.x.test"
    assert [e["account"] for e in masked["entries"]] == ["xero", "a-***", "xero"]
    assert masked["entries"][1]["fileName"] == "bill-***.pdf"
    assert masked["entries"][2]["props"] == ["p-***", "amount"]
    assert_clean(json.dumps(masked), [value], "the record the operator collected")
    assert {k: v for k, v in masked.items() if k != "entries"} == {
        "actions": 3,
        "simulated": 1,
        "dropped": 0,
    }
    dropped = json.loads(mask_record_part(text, None))
    assert all(not set(e) & set(FREE_TEXT_FIELDS) for e in dropped["entries"])
    assert [e["action"] for e in dropped["entries"]] == [e.action for e in entries]


def test_a_broker_record_the_operator_collected_gets_late_actions_without_names() -> None:
    """As for egress: the broker's record is opened with RECORD_OPEN; once the operator has
    labelled it collected, a gateway writing a late action keeps what the operator masked and
    leaves the late action's free text out."""
    value = canary(header=True)
    kube = FlushKube()
    actions = broker_recorder(kube)
    actions.add(CALLER, BrokerAction(0.0, "upload_file", "xero", "sent", False, file_name=value))
    asyncio.run(actions.flush())
    body = kube.objects["/api/v1/namespaces/ns/configmaps/bills-1-broker"]
    assert body["metadata"]["labels"][RECORD_STATE_LABEL] == RECORD_OPEN
    assert json.loads(body["data"]["gw-a.json"])["entries"][0]["fileName"] == value
    body["data"] = {k: mask_record_part(v, Masker([value]).mask) for k, v in body["data"].items()}
    body["metadata"]["labels"][RECORD_STATE_LABEL] = RECORD_COLLECTED
    actions.add(CALLER, BrokerAction.request(1.0, "xero", "GET", f"https://a.test/{value}", False))
    asyncio.run(actions.flush())
    part = json.loads(body["data"]["gw-a.json"])
    assert part["actions"] == 2
    # The upload as the operator masked it; the late request without its path.
    assert [(e.get("fileName"), e.get("path")) for e in part["entries"]] == [
        ("***", None), (None, None),
    ]  # fmt: skip
    assert_clean(json.dumps(body), [value], "the broker record written after collection")


def test_a_record_not_collected_is_read_masked_or_without_its_free_text() -> None:
    """What the judge reads (kube.egress.read_masked_record): a collected record as stored; one
    the operator has not collected (a gateway created it after the operator looked) with its
    free text masked by the caller's masker, or left out without one."""
    value = canary()
    part = json.dumps(
        {"actions": 1, "entries": [{"action": "upload_file", "fileName": f"bill-{value}.pdf"}]}
    )

    class Core:
        labels: ClassVar[dict[str, str]] = {}

        def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
            meta = SimpleNamespace(labels=self.labels)
            return SimpleNamespace(data={"gw.json": part}, metadata=meta)

    kube = SimpleNamespace(core=Core())
    masked = read_masked_record(kube, "ns", "bills-1-broker", Masker([value]).mask)  # type: ignore[arg-type]
    assert masked is not None and "bill-***.pdf" in masked["gw.json"]
    assert_clean(json.dumps(masked), [value], "a record read before collection")
    left_out = read_masked_record(kube, "ns", "bills-1-broker")  # type: ignore[arg-type]
    assert left_out is not None and "fileName" not in left_out["gw.json"]
    Core.labels = {RECORD_STATE_LABEL: RECORD_COLLECTED}  # collected: as the operator stored it
    assert read_masked_record(kube, "ns", "bills-1-broker") == {"gw.json": part}  # type: ignore[arg-type]


def test_every_judge_masks_a_record_not_collected_with_the_namespaces_values() -> None:
    """What the conversation's judge and the one-shot generate/fix judge both read a record
    the operator has not collected with (handlers/judge.namespace_masker): every value sealed
    in the namespace, in every form (a host carrying it in hex too); nothing sealed: nothing
    to mask; the keys not loaded or the secrets not listable: None, so the names are left out
    (fails closed)."""
    value = canary(header=True)
    ring = KeyRing.create()
    sealed, key_id = ring.seal(Binding("ns", "bills", "API_KEY"), value.encode())
    secret = {"metadata": {"name": "bills-api-key", "namespace": "ns"},
              "spec": {"integration": "bills", "key": "API_KEY", "encryptedValue": sealed,
                       "keyId": key_id}}  # fmt: skip
    listed: list[Any] = [secret]

    class Kube:
        def list_objects(self, plural: str, namespace: str) -> list[Any]:
            if not isinstance(listed, list):
                raise listed
            return listed

    runs = SimpleNamespace(sealing=SimpleNamespace(ring=ring))  # no cache: read from the API
    mask = namespace_masker(runs, Kube(), "ns", "agent")
    assert mask is not None
    host = f"{value.encode().hex()}.evil.test"
    part = json.dumps({"connections": 1, "entries": [
        {"method": "CONNECT", "host": host, "port": 443, "allowed": False, "status": 403,
         "reason": f"{host}:443 is not allowed"}]})  # fmt: skip

    class Core:
        def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
            return SimpleNamespace(data={"gw.json": part}, metadata=SimpleNamespace(labels={}))

    read = read_masked_record(SimpleNamespace(core=Core()), "ns", "b-1-egress", mask)  # type: ignore[arg-type]
    assert read is not None and json.loads(read["gw.json"])["entries"][0]["host"] == (
        "***.evil.test"
    )
    assert_clean(json.dumps(read), [value], "a record read before collection")
    assert namespace_masker(SimpleNamespace(sealing=None), Kube(), "ns", "agent") is None
    listed = []
    assert namespace_masker(runs, Kube(), "ns", "agent")("a.test") == "a.test"  # type: ignore[misc]
    listed = KubeError("listing IntegrationSecrets: forbidden", 403)  # type: ignore[assignment]
    assert namespace_masker(runs, Kube(), "ns", "agent") is None


def test_the_broker_writes_an_action_before_it_answers() -> None:
    """Recorder.write_now (the broker calls it before answering an action): the record holds
    the action before the pod can exit, so the operator's collection masks it rather than a
    later batch writing it without its names; a record with nothing new is not written."""
    kube = FlushKube()
    actions = broker_recorder(kube)
    actions.add(CALLER, BrokerAction.request(0.0, "xero", "POST", "https://a.test/bills", True))
    asyncio.run(actions.write_now(CALLER))
    body = kube.objects["/api/v1/namespaces/ns/configmaps/bills-1-broker"]
    assert json.loads(body["data"]["gw-a.json"])["entries"][0]["path"] == "/bills"
    calls = len(kube.calls)
    asyncio.run(actions.write_now(CALLER))
    asyncio.run(actions.flush())
    assert len(kube.calls) == calls


def test_the_broker_record_writes_its_counts_as_the_egress_record_does() -> None:
    """One bounded record for both kinds: the same key order, `dropped` after the counts, and
    the parts of several gateway processes merged by time with the counts summed."""
    from docrelay.gateway.egress import Connection, RunRecord

    actions, connections = ActionRecord(limit=2), RunRecord(limit=2)
    for i in range(3):
        actions.add(BrokerAction(float(i), "upload_file", "xero", "simulated", True))
        connections.add(Connection(float(i), "GET", "h.test", 80, "/", True, 200, 1, 2, 0.1))
    assert list(actions.to_json()) == ["actions", "simulated", "dropped", "entries"]
    assert list(connections.to_json()) == [
        "connections", "denied", "bytesOut", "bytesIn", "dropped", "entries"
    ]  # fmt: skip
    other = ActionRecord()
    other.add(BrokerAction(1.5, "execute_action", "xero", "sent", False, tool="t"))
    merged = merge_actions([actions.to_json(), other.to_json(), {"actions": "x"}], limit=2)
    assert {k: v for k, v in merged.items() if k != "entries"} == {
        "actions": 4,
        "simulated": 3,
        "dropped": 2,
    }
    assert [e["action"] for e in merged["entries"]] == ["execute_action", "upload_file"]


def test_the_broker_record_as_docrelay_logs_shows_it() -> None:
    """`docrelay logs RUN --broker`: one line per action with what it named, the counts
    below; a record not collected yet (its names left out) still lists each action."""
    from dataclasses import replace

    from docrelay.cli.logs import broker_summary, broker_table

    record = ActionRecord(limit=2)
    for at, method, outcome in ((0, "get", "sent"), (1, "post", "simulated")):
        url = f"https://api.x.test/v1/{method}"
        request = BrokerAction.request(1_700_000_000 + at, "xero", method, url, True)
        record.add(replace(request, outcome=outcome, status=200))
    record.add(BrokerAction(1_700_000_002, "execute_action", "slack", "sent", False, status=200,
                            tool="slack-send-message", props=("channel", "text")))  # fmt: skip
    body = merge_actions([record.to_json()])
    assert broker_summary(body) == "3 action(s), 1 simulated (dry run)"
    lines = broker_table(body).splitlines()
    assert lines[0].split() == ["TIME", "ACTION", "ACCOUNT", "OUTCOME", "STATUS", "TARGET"]
    assert lines[1].split() == [
        "2023-11-14T22:13:21Z", "api_request", "xero", "simulated", "200", "POST",
        "api.x.test/v1/post",
    ]  # fmt: skip
    assert lines[2].endswith("slack-send-message (channel, text)"), lines[2]
    assert lines[3] == "broker: 3 action(s), 1 simulated (dry run); the 1 oldest not listed"
    late = broker_table(merge_actions([record.to_json(paths=False)])).splitlines()
    # without the names the code chose (its account and host too): each action still listed
    assert late[1].split()[1:] == ["api_request", "simulated", "200", "POST"], late[1]
    assert late[2].split()[-1] == "200"
