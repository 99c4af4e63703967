"""The egress proxy's decisions as tables, and the proxy itself on loopback with the broker's
identity check stubbed (the real chain, TokenReview included, is tests/cluster/test_egress.py)."""

from __future__ import annotations

import asyncio
import base64
import copy
import http.client
import ipaddress
import json
import secrets
import socket
import ssl
import string
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import quote

import pytest

from docrelay.gateway import egress as e
from docrelay.gateway.broker import Caller, Refusal
from docrelay.gateway.kubeapi import ApiUnavailable
from docrelay.gateway.proxy import EgressProxy, Recorder
from docrelay.gateway.settings import GatewaySettings
from docrelay.masking import Masker
from tests.leakcheck import assert_clean, canary


def policy(*hosts: str, cidrs: tuple[str, ...] = ()) -> e.Policy:
    return e.Policy.from_spec({"egress": {"hosts": list(hosts), "cidrs": list(cidrs)}})


@pytest.mark.parametrize(
    ("entry", "host", "port", "default", "allowed"),
    [
        ("api.example.com", "api.example.com", 443, 443, True),
        ("api.example.com", "api.example.com", 80, 80, True),  # plain HTTP's default
        ("api.example.com", "api.example.com", 8443, 443, False),  # a port not listed
        ("api.example.com:8443", "api.example.com", 8443, 443, True),
        ("api.example.com:8443", "api.example.com", 443, 443, False),
        ("api.example.com", "example.com", 443, 443, False),
        ("api.example.com", "xapi.example.com", 443, 443, False),
        ("*.example.com", "api.example.com", 443, 443, True),
        ("*.example.com", "a.b.example.com", 443, 443, True),  # one or more labels
        ("*.example.com", "example.com", 443, 443, False),  # never the name itself
        ("*.example.com", "badexample.com", 443, 443, False),
        ("*.example.com", "example.com.evil.net", 443, 443, False),
        ("*.example.com:8080", "x.example.com", 8080, 80, True),
    ],
)
def test_host_rules(entry: str, host: str, port: int, default: int, allowed: bool) -> None:
    assert policy(entry).allows_host(host, port, default) is allowed


def test_refusal_names_the_host_and_the_fix() -> None:
    with pytest.raises(e.Denied) as denied:
        e.check_destination(policy("api.example.com"), "evil.example.net", 443, 443)
    assert denied.value.status == 403
    assert "evil.example.net:443" in denied.value.reason
    assert "spec.egress.hosts" in denied.value.reason
    with pytest.raises(e.Denied) as port:
        e.check_destination(policy("api.example.com"), "api.example.com", 8443, 443)
    assert "port 8443 is not listed" in port.value.reason
    assert "api.example.com:8443" in port.value.reason


def test_address_literals_need_cidrs() -> None:
    e.check_destination(policy(cidrs=("203.0.113.0/24",)), "203.0.113.9", 5432, 443)
    with pytest.raises(e.Denied, match=r"spec\.egress\.cidrs"):
        e.check_destination(policy("api.example.com"), "203.0.113.9", 443, 443)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not public"),  # carrier-grade NAT
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_special_use_addresses(address: str, reason: str | None) -> None:
    assert e.special_use(ipaddress.ip_address(address)) == reason


def test_resolved_addresses_are_checked() -> None:
    assert e.pick_addresses(policy("a.test"), "a.test", ["93.184.216.34"]) == ["93.184.216.34"]
    # A name resolving to loopback (or rebinding to it) is refused without cidrs...
    with pytest.raises(e.Denied) as denied:
        e.pick_addresses(policy("a.test"), "a.test", ["127.0.0.1"])
    assert "a.test resolves to 127.0.0.1, a loopback address" in denied.value.reason
    assert "spec.egress.cidrs" in denied.value.reason
    # ...allowed inside them, and a mixed answer keeps only what may be reached.
    assert e.pick_addresses(policy(cidrs=("127.0.0.0/8",)), "a.test", ["127.0.0.2"]) == [
        "127.0.0.2"
    ]
    assert e.pick_addresses(policy(), "a.test", ["10.0.0.1", "93.184.216.34"]) == ["93.184.216.34"]


@pytest.mark.parametrize(
    ("line", "target"),
    [
        ("CONNECT api.example.com:443 HTTP/1.1", ("CONNECT", "api.example.com", 443, "", 443)),
        ("CONNECT API.Example.com.:8443 HTTP/1.1", ("CONNECT", "api.example.com", 8443, "", 443)),
        ("CONNECT [::1]:443 HTTP/1.1", ("CONNECT", "::1", 443, "", 443)),
        ("GET http://a.test/x?y=1 HTTP/1.1", ("GET", "a.test", 80, "/x?y=1", 80)),
        ("POST http://a.test:8080 HTTP/1.0", ("POST", "a.test", 8080, "/", 80)),
    ],
)
def test_request_lines(line: str, target: tuple[Any, ...]) -> None:
    parsed = e.parse_request_line(line)
    assert (parsed.method, parsed.host, parsed.port, parsed.path, parsed.default_port) == target


@pytest.mark.parametrize(
    "line",
    [
        "GET /x HTTP/1.1",  # origin-form: not a proxy request
        "GET https://a.test/ HTTP/1.1",
        "CONNECT a.test HTTP/1.1",
        "CONNECT a.test:99999 HTTP/1.1",
        "CONNECT a_b.test:443 HTTP/1.1",
        "GET http://user:pw@a.test/ HTTP/1.1",
        "get http://a.test/ HTTP/1.1",
        "GET http://a.test/ SPDY/3",
    ],
)
def test_malformed_request_lines(line: str) -> None:
    with pytest.raises(e.Denied) as denied:
        e.parse_request_line(line)
    assert denied.value.status == 400


def test_proxy_token() -> None:
    basic = "Basic " + base64.b64encode(b"run:tok.en").decode()
    assert e.proxy_token(basic) == "tok.en"
    assert e.proxy_token("Bearer tok.en") == "tok.en"
    assert e.proxy_token("Basic " + base64.b64encode(b"run:").decode()) is None
    assert e.proxy_token("Basic !!!") is None
    assert e.proxy_token("Digest x") is None
    assert e.proxy_token(None) is None


def test_refusal_response_carries_the_reason_in_the_status_line() -> None:
    raw = e.refusal_response(403, "evil.test:443 is not allowed; list it")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 403 Egress Denied: evil.test:443 is not allowed; list it"
    assert f"{e.DENIED_HEADER}: evil.test:443 is not allowed; list it" in lines
    assert body == b"docrelay egress proxy: evil.test:443 is not allowed; list it\n"


def entry(i: int, allowed: bool = True) -> e.Connection:
    return e.Connection(
        at=1_700_000_000 + i, method="CONNECT", host=f"h{i}.test", port=443, path=None,
        allowed=allowed, status=200 if allowed else 403, bytes_out=10, bytes_in=100,
        seconds=0.5,
    )  # fmt: skip


def test_record_is_bounded_and_counts_everything() -> None:
    record = e.RunRecord(limit=3)
    for i in range(10):
        record.add(entry(i, allowed=i % 2 == 0))
    body = record.to_json()
    assert (body["connections"], body["denied"], body["dropped"]) == (10, 5, 7)
    assert (body["bytesOut"], body["bytesIn"]) == (100, 1000)
    assert [x["host"] for x in body["entries"]] == ["h7.test", "h8.test", "h9.test"]


def test_records_of_replicas_merge() -> None:
    a, b = e.RunRecord(limit=5), e.RunRecord(limit=5)
    for i in range(4):
        (a if i % 2 else b).add(entry(i))
    merged = e.merge_records([a.to_json(), b.to_json()], limit=3)
    assert merged["connections"] == 4 and merged["dropped"] == 1
    assert [x["host"] for x in merged["entries"]] == ["h1.test", "h2.test", "h3.test"]


def test_record_path_drops_the_query() -> None:
    assert e.record_path("/v1/bills?api_key=secret") == "/v1/bills"
    assert len(e.record_path("/" + "x" * 1000)) == e.MAX_PATH_CHARS


def test_record_path_masks_what_the_gateway_knows() -> None:
    """The run's broker token (the proxy password) is the one value the gateway holds."""
    mask = Masker(["tok-9f8e7d6c"]).mask
    assert e.record_path("/v1/tok-9f8e7d6c/bills?t=tok-9f8e7d6c", mask) == "/v1/***/bills"


def path_entry(path: str) -> dict[str, Any]:
    return {"at": "2026-01-01T00:00:00Z", "method": "GET", "host": "ledger.test", "port": 80,
            "path": path, "allowed": True, "status": 200}  # fmt: skip


def test_the_operator_masks_each_path_with_the_runs_values() -> None:
    """What kube.egress.collect_record stores: each part's paths masked (a canary, quoted as
    urllib.parse.quote writes it into a URL), or dropped when the values could not be opened;
    counts and every other field as the gateway wrote them."""
    value = canary()
    part = {"connections": 2, "denied": 0, "bytesOut": 10, "bytesIn": 20, "dropped": 0,
            "entries": [path_entry(f"/v1/{quote(value)}/bills"), path_entry("/ok")]}  # fmt: skip
    text = json.dumps(part, separators=(",", ":"))
    assert e.mask_record_part(text, lambda t: t) == text  # nothing to mask: unchanged
    masked = json.loads(e.mask_record_part(text, Masker([value]).mask))
    assert [x["path"] for x in masked["entries"]] == ["/v1/***/bills", "/ok"]
    assert {k: v for k, v in masked.items() if k != "entries"} == {
        k: v for k, v in part.items() if k != "entries"
    }
    assert_clean(json.dumps(masked), [value], "the masked record")
    dropped = json.loads(e.mask_record_part(text, None))
    assert all("path" not in x for x in dropped["entries"]) and dropped["connections"] == 2
    assert e.mask_record_part(f"not json {value}", Masker([value]).mask) == "not json ***"
    assert e.mask_record_part(f"not json {value}", None) == "{}"


def hex_host(value: str, below: str = "evil.test") -> str:
    """A host name carrying a value as hostile code puts it there: its UTF-8 bytes in hex."""
    return f"{value.encode().hex()}.{below}"


def test_the_operator_masks_each_host_and_reason_with_the_runs_values() -> None:
    """Code can put a value into a host name it asks the proxy for (refused, but recorded):
    collect_record masks each entry's host, and the refusal reason naming it, as it masks
    paths; a host the user listed reads as before (masking changes only where a value
    appears); without the values, hosts and reasons are left out like paths."""
    value = canary(header=True)
    evil = hex_host(value)
    refused = {"at": "2026-01-01T00:00:00Z", "method": "CONNECT", "host": evil, "port": 443,
               "allowed": False, "status": 403,
               "reason": f"{evil}:443 is not allowed; {e.FIX}"}  # fmt: skip
    part = {"connections": 2, "denied": 1, "bytesOut": 0, "bytesIn": 0, "dropped": 0,
            "entries": [refused, path_entry("/ok")]}  # fmt: skip
    text = json.dumps(part, separators=(",", ":"))
    masked = json.loads(e.mask_record_part(text, Masker([value]).mask))
    assert [x["host"] for x in masked["entries"]] == ["***.evil.test", "ledger.test"]
    assert masked["entries"][0]["reason"] == f"***.evil.test:443 is not allowed; {e.FIX}"
    assert_clean(json.dumps(masked), [value], "the masked record")
    dropped = json.loads(e.mask_record_part(text, None))
    assert all("host" not in x and "reason" not in x for x in dropped["entries"])
    assert [x["status"] for x in dropped["entries"]] == [403, 200]  # every entry still there


@pytest.mark.parametrize(
    ("host", "reason", "told"),
    [
        ("ledger.test", "ledger.test:8443 is not allowed: port 8443 is not listed; list it in "
         "spec.egress.hosts of the Integration as ledger.test:8443", None),  # listed: as is
        ("a.wild.test", "a.wild.test:8443 is not allowed: port 8443 is not listed; list it in "
         "spec.egress.hosts of the Integration as a.wild.test:8443",
         f"{e.UNNAMED_HOST}:8443 is not allowed: port 8443 is not listed; list it in "
         f"spec.egress.hosts of the Integration as {e.UNNAMED_HOST}:8443"),
        ("evil.test", f"evil.test:443 is not allowed; {e.FIX}",
         f"{e.UNNAMED_HOST}:443 is not allowed; {e.FIX}"),
        ("10.0.0.1", "10.0.0.1 is not inside spec.egress.cidrs of the Integration",
         f"{e.UNNAMED_HOST} is not inside spec.egress.cidrs of the Integration"),
        ("test", "test:443 is not allowed; list it in spec.egress.hosts of the Integration test",
         f"{e.UNNAMED_HOST}:443 is not allowed; list it in spec.egress.hosts of the "
         f"Integration {e.UNNAMED_HOST}"),  # a whole name only, never inside another word
    ],
)  # fmt: skip
def test_the_gateways_own_texts_name_only_hosts_the_user_listed(
    host: str, reason: str, told: str | None
) -> None:
    """The gateway's log and EgressDenied Events are not masked by anyone: they name a host
    only when an exact spec.egress.hosts entry names it (the user's text)."""
    rules = policy("ledger.test", "*.wild.test")
    target = e.Target("CONNECT", host, 443, "", 443, told=e.host_as_told(rules, host))
    assert target.told == (host if told is None else e.UNNAMED_HOST)
    assert e.reason_as_told(target, reason) == (reason if told is None else told)


# --- the proxy on loopback, identity stubbed ------------------------------------------------


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    posted: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        Upstream.posted.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = b"x" * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Proxy-Auth", str("Proxy-Authorization" in self.headers))
        self.send_header("X-Seen-Host", ",".join(self.headers.get_all("Host") or []))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def caller(run: str) -> Caller:
    dry = "dry" in run  # a dry test run (gateway/dryrun.py)
    return Caller("ns", f"{run}-pod", f"{run}-uid", f"{run}-1", run, f"{run}-ruid", 1,
                  f"{run}-int", "doc", dry, dry)  # fmt: skip


class StubBroker:
    """Tokens `tok-<run>`; the Integration of run X lists x.test (and loopback cidrs when
    X starts with "local")."""

    def __init__(self) -> None:
        self.lookups = 0
        self.port = 443  # the upstream's port, listed with each host

    async def identify(self, token: str) -> Caller:
        self.lookups += 1
        await asyncio.sleep(0.05)  # concurrent connections arrive during the check
        if not token.startswith("tok-"):
            raise Refusal(401, "token not accepted")
        return caller(token[4:])

    async def integration_spec(self, who: Caller) -> dict[str, Any]:
        cidrs = ["127.0.0.0/8"] if who.run.startswith("local") else []
        hosts = [f"{who.run}.test:{self.port}", f"*.wild.test:{self.port}"]
        # A run named *safe* has its own host marked safe for dry runs (not the wildcard).
        safe = [f"{who.run}.test:{self.port}"] if "safe" in who.run else []
        return {"egress": {"hosts": hosts, "cidrs": cidrs, "dryRunSafeHosts": safe}}


class ProxyThread:
    def __init__(self, port: int, **settings: Any) -> None:
        self.settings = GatewaySettings(
            namespace="ns",
            proxy_port=port,
            **settings,
            egress_resolve={"local.test": "127.0.0.1", "other.test": "127.0.0.1",
                            "a.wild.test": "127.0.0.1", "localdry.test": "127.0.0.1",
                            "localdrysafe.test": "127.0.0.1"},
        )  # fmt: skip
        self.broker = StubBroker()
        self.recorder = Recorder(None, 50)
        self.loop = asyncio.new_event_loop()
        self.proxy = EgressProxy(self.settings, self.broker, self.recorder)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def proxy(upstream: int) -> Iterator[ProxyThread]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = ProxyThread(port)
    running.broker.port = upstream
    yield running
    running.stop()


def record_of(proxy: ProxyThread, job: str, connections: int = 1) -> e.RunRecord:
    """The record once it has this many connections (each is added when it closes)."""
    for _ in range(100):
        record = proxy.recorder.record_of("ns", job)
        if record is not None and record.connections >= connections:
            return record
        threading.Event().wait(0.05)
    raise AssertionError(f"no record of {connections} connection(s) for {job}")


def opener(proxy: ProxyThread, token: str) -> urllib.request.OpenerDirector:
    url = f"http://run:{token}@127.0.0.1:{proxy.settings.proxy_port}"
    return urllib.request.build_opener(urllib.request.ProxyHandler({"http": url, "https": url}))


def test_plain_http_through_the_proxy_is_relayed_and_recorded(
    proxy: ProxyThread, upstream: int
) -> None:
    with opener(proxy, "tok-local").open(f"http://local.test:{upstream}/bills?k=v", timeout=5) as r:
        assert r.status == 200 and len(r.read()) == 1000
        assert r.headers["X-Seen-Proxy-Auth"] == "False"  # the token stays with the proxy
        assert r.headers["X-Seen-Host"] == f"local.test:{upstream}"
    # A Host header naming another site is replaced by the one that was checked.
    request = urllib.request.Request(
        f"http://local.test:{upstream}/", headers={"Host": "evil.example.net"}
    )
    with opener(proxy, "tok-local").open(request, timeout=5) as r:
        assert r.headers["X-Seen-Host"] == f"local.test:{upstream}"
    conn = record_of(proxy, "local-1", 2).entries[0]
    assert (conn.method, conn.host, conn.port, conn.path) == (
        "GET",
        "local.test",
        upstream,
        "/bills",
    )
    assert conn.allowed and conn.status == 200 and conn.bytes_in > 1000 and conn.bytes_out > 0


def test_a_dry_run_sends_no_write_and_opens_no_tunnel(proxy: ProxyThread, upstream: int) -> None:
    """Dry test runs: a plain-HTTP write gets the proxy's own marked 200 and reaches nothing;
    a read is relayed; an HTTPS tunnel is not opened (403 "dry run: ... needs a live test");
    the record says what was not sent."""
    Upstream.posted.clear()
    base = f"http://localdry.test:{upstream}"
    post = urllib.request.Request(f"{base}/bills?k=v", data=b'{"n": 1}', method="POST")
    with opener(proxy, "tok-localdry").open(post, timeout=5) as r:
        assert r.status == 200 and r.headers["X-Docrelay-Dry-Run"] == "simulated"
        assert json.loads(r.read())["dryRun"] is True
    with opener(proxy, "tok-localdry").open(f"{base}/rates", timeout=5) as r:
        assert r.status == 200 and len(r.read()) == 1000  # a read is real
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.settings.proxy_port, timeout=5)
    token = base64.b64encode(b"run:tok-localdry").decode()
    conn.set_tunnel("localdry.test", upstream, headers={"Proxy-Authorization": f"Basic {token}"})
    with pytest.raises(OSError) as stopped:
        conn.connect()
    assert "403 Egress Denied: dry run: localdry.test" in str(stopped.value)
    assert "needs a live test" in str(stopped.value)
    assert Upstream.posted == []
    post, read, tunnel = record_of(proxy, "localdry-1", 3).entries
    assert (post.method, post.path, post.status, post.bytes_out) == ("POST", "/bills", 200, 0)
    assert post.allowed and post.reason == "dry run: simulated, not sent"
    assert (read.method, read.reason) == ("GET", "")
    assert (tunnel.method, tunnel.allowed, tunnel.status) == ("CONNECT", False, 403)
    assert tunnel.reason.startswith("dry run: localdry.test")

    # The same write in a live run reaches the destination.
    live = urllib.request.Request(f"http://local.test:{upstream}/bills", data=b"{}", method="POST")
    with opener(proxy, "tok-local").open(live, timeout=5) as r:
        assert r.status == 201
    assert Upstream.posted == [b"{}"]


def test_connect_to_an_unlisted_host_is_refused_with_its_name(proxy: ProxyThread) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.settings.proxy_port, timeout=5)
    token = base64.b64encode(b"run:tok-local").decode()
    conn.set_tunnel("evil.example.net", 443, headers={"Proxy-Authorization": f"Basic {token}"})
    with pytest.raises(OSError) as refused:
        conn.connect()
    text = str(refused.value)
    assert text.startswith("Tunnel connection failed: 403 Egress Denied: evil.example.net:443")
    assert "spec.egress.hosts" in text
    assert record_of(proxy, "local-1").denied == 1


def test_a_host_the_code_chose_is_not_named_in_the_gateways_log(
    proxy: ProxyThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Code asking for `<value-in-hex>.evil.test`: refused with its name (the code's own
    text), recorded with it (the operator masks it at collection), and the gateway's audit
    line, which nobody masks, says UNNAMED_HOST instead."""
    value = canary(header=True)
    caplog.set_level("INFO", logger="docrelay.egress.audit")
    conn = http.client.HTTPSConnection("127.0.0.1", proxy.settings.proxy_port, timeout=5)
    token = base64.b64encode(b"run:tok-local").decode()
    conn.set_tunnel(hex_host(value), 443, headers={"Proxy-Authorization": f"Basic {token}"})
    with pytest.raises(OSError):
        conn.connect()
    (recorded,) = record_of(proxy, "local-1").entries
    assert recorded.host == hex_host(value)
    lines = [r.getMessage() for r in caplog.records if r.name == "docrelay.egress.audit"]
    assert any(f"host={e.UNNAMED_HOST} port=443 allowed=False" in line for line in lines), lines
    assert_clean("\n".join(lines), [value], "the gateway's audit log")


def test_a_method_the_code_made_up_is_recorded_as_other(
    proxy: ProxyThread, upstream: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A request method is the code's text too (up to 16 capitals, enough for a secret): one
    HTTP does not define reaches the destination as sent, and the record and the audit log,
    which nobody masks, say OTHER."""
    value = "".join(secrets.choice(string.ascii_uppercase) for _ in range(16))
    caplog.set_level("INFO", logger="docrelay.egress.audit")
    made_up = urllib.request.Request(f"http://local.test:{upstream}/bills", method=value)
    with pytest.raises(urllib.error.HTTPError) as answered:
        opener(proxy, "tok-local").open(made_up, timeout=5)
    assert answered.value.code == 501  # the destination's answer: it was relayed
    (recorded,) = record_of(proxy, "local-1").entries
    assert (recorded.method, recorded.path, recorded.status) == ("OTHER", "/bills", 501)
    lines = [r.getMessage() for r in caplog.records if r.name == "docrelay.egress.audit"]
    assert any("method=OTHER host=local.test" in line for line in lines), lines
    assert_clean(json.dumps(recorded.to_json()) + "\n".join(lines), [value], "the egress record")


def test_loopback_without_cidrs_and_bad_tokens_are_refused(
    proxy: ProxyThread, upstream: int
) -> None:
    # Run "other" lists other.test, which resolves to 127.0.0.1: it has no cidrs.
    with pytest.raises(urllib.error.HTTPError) as denied:
        opener(proxy, "tok-other").open(f"http://other.test:{upstream}/", timeout=5)
    assert denied.value.code == 403
    assert (
        "other.test resolves to 127.0.0.1, a loopback address"
        in denied.value.headers[e.DENIED_HEADER]
    )
    with pytest.raises(urllib.error.HTTPError) as unauthenticated:
        opener(proxy, "bad").open(f"http://local.test:{upstream}/", timeout=5)
    assert unauthenticated.value.code == 407


def test_concurrent_connections_share_one_identity_check(proxy: ProxyThread, upstream: int) -> None:
    async def fetch(i: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.settings.proxy_port)
        run = "local" if i % 2 else "localtwo"
        auth = base64.b64encode(f"r:tok-{run}".encode()).decode()
        writer.write(
            f"GET http://a.wild.test:{upstream}/ HTTP/1.1\r\nHost: a.wild.test\r\n"
            f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode()
        )
        data = await reader.read()
        writer.close()
        return int(data.split(b" ")[1])

    async def many() -> list[int]:
        return await asyncio.gather(*(fetch(i) for i in range(40)))

    assert asyncio.run(many()) == [200] * 40
    assert proxy.broker.lookups == 2  # one per token, not one per connection
    for job in ("local-1", "localtwo-1"):
        assert record_of(proxy, job, 20).connections == 20


def test_the_record_as_docrelay_logs_shows_it() -> None:
    from docrelay.cli.logs import egress_summary, egress_table

    record = e.RunRecord(limit=1)
    record.add(entry(0, allowed=False))
    record.add(
        e.Connection(
            at=1_700_000_001, method="GET", host="a.test", port=80, path="/bills",
            allowed=True, status=201, bytes_out=2500, bytes_in=120, seconds=0.25,
        )
    )  # fmt: skip
    body = e.merge_records([record.to_json()])
    assert egress_summary(body) == "2 connection(s), 1 denied, 2.5 kB out, 220 B in"
    lines = egress_table(body).splitlines()
    assert lines[0].split() == [
        "TIME", "ALLOWED", "STATUS", "METHOD", "DESTINATION", "OUT", "IN", "SECONDS", "PATH",
        "/", "REASON",
    ]  # fmt: skip
    assert lines[1].split() == [
        "2023-11-14T22:13:21Z", "yes", "201", "GET", "a.test:80", "2.5", "kB", "120", "B",
        "0.25", "/bills",
    ]  # fmt: skip
    assert (
        lines[2]
        == "egress: 2 connection(s), 1 denied, 2.5 kB out, 220 B in; the 1 oldest not listed"
    )


def test_identity_checks_are_cached_and_refusals_only_briefly() -> None:
    now = [1000.0]
    broker = StubBroker()
    proxy = EgressProxy(
        GatewaySettings(namespace="ns", proxy_port=1), broker, Recorder(None, 5),  # type: ignore[arg-type]
        clock=lambda: now[0],
    )  # fmt: skip

    async def ask(token: str) -> str:
        try:
            return (await proxy.identify(token))[0].run
        except Refusal as exc:
            return f"refused {exc.status}"

    async def scenario() -> list[str]:
        seen = [await ask("tok-a"), await ask("bad"), await ask("bad")]
        now[0] += 3  # past the refusal's 2 s, within the answer's 10 s
        seen += [await ask("tok-a"), await ask("bad")]
        now[0] += 10
        seen.append(await ask("tok-a"))
        return seen

    assert asyncio.run(scenario()) == ["a", "refused 401", "refused 401", "a", "refused 401", "a"]
    assert broker.lookups == 4  # a, bad, bad again after 2 s, a again after 10 s


def test_a_run_has_at_most_its_connection_limit_open(upstream: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = ProxyThread(port, egress_max_connections_per_run=1)
    proxy.broker.port = upstream
    auth = base64.b64encode(b"r:tok-local").decode()
    try:
        held = socket.create_connection(("127.0.0.1", port), 5)
        held.sendall(
            f"CONNECT local.test:{upstream} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
            .encode()
        )  # fmt: skip
        assert held.recv(64).startswith(b"HTTP/1.1 200 ")  # a tunnel, kept open
        second = socket.create_connection(("127.0.0.1", port), 5)
        second.sendall(
            f"GET http://local.test:{upstream}/ HTTP/1.1\r\nProxy-Authorization: Basic {auth}"
            "\r\n\r\n".encode()
        )
        assert second.recv(64).startswith(b"HTTP/1.1 429 ")
        second.close()
        held.close()
        # Once the tunnel closes, the run may connect again.
        for _ in range(50):
            try:
                with opener(proxy, "tok-local").open(f"http://local.test:{upstream}/", timeout=5):
                    break
            except urllib.error.HTTPError as exc:
                assert exc.code == 429
                threading.Event().wait(0.05)
        else:
            raise AssertionError("the slot was never given back")
    finally:
        proxy.stop()


class FlushKube:
    """A stand-in for the gateway's API client: merge patches and creates of ConfigMaps."""

    def __init__(self, fail: bool = False) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.fail = fail
        self.calls: list[str] = []

    async def patch_json(self, path: str, body: dict[str, Any]) -> bool:
        self.calls.append("patch")
        if self.fail:
            raise ApiUnavailable("API server answered 503")
        if path not in self.objects:
            return False
        self.objects[path]["data"].update(body["data"])
        return True

    async def json_patch(self, path: str, operations: list[dict[str, Any]]) -> int:
        """RFC 6902 as the API server applies it: every `test` must hold (else 422)."""
        self.calls.append("patch")
        if self.fail:
            raise ApiUnavailable("API server answered 503")
        if path not in self.objects:
            return 404
        target = self.objects[path]
        for op in operations:
            if op["op"] == "test":
                label = op["path"].rsplit("/", 1)[1].replace("~1", "/").replace("~0", "~")
                if (target["metadata"].get("labels") or {}).get(label) != op["value"]:
                    return 422
        for op in operations:
            if op["op"] == "add":
                target["data"][op["path"].rsplit("/", 1)[1]] = op["value"]
        return 200

    async def create_json(self, path: str, body: dict[str, Any]) -> bool:
        self.calls.append("create")
        self.objects[f"{path}/{body['metadata']['name']}"] = copy.deepcopy(body)
        return True

    async def get_json(self, path: str) -> dict[str, Any] | None:
        self.calls.append("get")
        return copy.deepcopy(self.objects.get(path))


def test_records_are_written_per_gateway_process_and_kept_until_written() -> None:
    kube = FlushKube(fail=True)
    recorder = Recorder(kube, 10, replica="gw-a")  # type: ignore[arg-type]
    recorder.add(caller("r1"), entry(1))
    asyncio.run(recorder.flush())  # the API server away: kept for the next flush
    assert kube.objects == {} and recorder.records[("ns", "r1-1")].dirty
    kube.fail = False
    asyncio.run(recorder.flush())
    path = "/api/v1/namespaces/ns/configmaps/r1-1-egress"
    body = kube.objects[path]
    assert body["metadata"]["ownerReferences"][0]["name"] == "r1"
    assert body["metadata"]["labels"]["docrelay.io/run"] == "r1"
    recorder.add(caller("r1"), entry(2))
    other = Recorder(kube, 10, replica="gw-b")  # type: ignore[arg-type]
    other.add(caller("r1"), entry(3, allowed=False))
    asyncio.run(recorder.flush())
    asyncio.run(other.flush())
    assert sorted(body["data"]) == ["gw-a.json", "gw-b.json"]  # replicas never overwrite
    merged = e.merge_records(json.loads(v) for v in body["data"].values())
    assert (merged["connections"], merged["denied"]) == (3, 1)
    calls = len(kube.calls)
    asyncio.run(recorder.flush())  # nothing new: nothing written
    assert len(kube.calls) == calls


def test_a_record_the_operator_collected_keeps_its_masked_paths_and_gets_no_new_ones() -> None:
    """The operator masks the record with the run's values and labels it collected
    (kube.egress.collect_record); a gateway that writes after that (a connection that ended
    as the pod exited) cannot mask those values: it keeps the paths the operator masked and
    adds its later connections without theirs, never putting a value back."""
    value = canary(header=True)
    kube = FlushKube()
    recorder = Recorder(kube, 10, replica="gw-a")  # type: ignore[arg-type]
    plain = e.Connection(at=1_700_000_000, method="GET", host="ledger.test", port=80,
                         path=f"/v1/{value}", allowed=True, status=200, bytes_out=1,
                         bytes_in=2, seconds=0.1)  # fmt: skip
    recorder.add(caller("r1"), plain)
    asyncio.run(recorder.flush())
    path = "/api/v1/namespaces/ns/configmaps/r1-1-egress"
    body = kube.objects[path]
    assert body["metadata"]["labels"][e.RECORD_STATE_LABEL] == e.RECORD_OPEN
    assert json.loads(body["data"]["gw-a.json"])["entries"][0]["path"] == f"/v1/{value}"
    # The operator collects: masked, labelled.
    masker = Masker([value]).mask
    body["data"] = {k: e.mask_record_part(v, masker) for k, v in body["data"].items()}
    body["metadata"]["labels"][e.RECORD_STATE_LABEL] = e.RECORD_COLLECTED
    late = e.Connection(at=1_700_000_002, method="GET", host="ledger.test", port=80,
                        path=f"/v2/{value}", allowed=True, status=200, bytes_out=1,
                        bytes_in=2, seconds=0.1)  # fmt: skip
    recorder.add(caller("r1"), late)  # one more connection, recorded after that
    asyncio.run(recorder.flush())
    part = json.loads(body["data"]["gw-a.json"])
    assert part["connections"] == 2
    assert [x.get("path") for x in part["entries"]] == ["/v1/***", None]
    assert_clean(json.dumps(body), [value], "the record written after collection")
    recorder.add(caller("r1"), entry(3))
    asyncio.run(recorder.flush())  # and every write after it
    assert_clean(json.dumps(body), [value], "the record")
    part = json.loads(body["data"]["gw-a.json"])
    assert part["connections"] == 3
    assert [x.get("path") for x in part["entries"]] == ["/v1/***", None, None]


def test_hosts_the_operator_masked_stay_masked_in_a_late_write() -> None:
    """A refused host carrying a value: masked by the operator at collection; a gateway
    writing after that keeps the masked host and reason, and adds its later connections
    without host or reason (it cannot mask them), never putting the value back."""
    value = canary(header=True)
    kube = FlushKube()
    recorder = Recorder(kube, 10, replica="gw-a")  # type: ignore[arg-type]

    def refused(at: int) -> e.Connection:
        host = hex_host(value)
        return e.Connection(at=at, method="CONNECT", host=host, port=443, path=None,
                            allowed=False, status=403, bytes_out=0, bytes_in=0, seconds=0.0,
                            reason=f"{host}:443 is not allowed; {e.FIX}")  # fmt: skip

    recorder.add(caller("r1"), refused(1_700_000_000))
    asyncio.run(recorder.flush())
    body = kube.objects["/api/v1/namespaces/ns/configmaps/r1-1-egress"]
    assert json.loads(body["data"]["gw-a.json"])["entries"][0]["host"] == hex_host(value)
    masker = Masker([value]).mask
    body["data"] = {k: e.mask_record_part(v, masker) for k, v in body["data"].items()}
    body["metadata"]["labels"][e.RECORD_STATE_LABEL] = e.RECORD_COLLECTED
    recorder.add(caller("r1"), refused(1_700_000_002))  # after collection
    asyncio.run(recorder.flush())
    assert_clean(json.dumps(body), [value], "the record written after collection")
    part = json.loads(body["data"]["gw-a.json"])
    assert (part["connections"], part["denied"]) == (2, 2)
    assert [(x.get("host"), x.get("status")) for x in part["entries"]] == [
        ("***.evil.test", 403), (None, 403)
    ]  # fmt: skip
    assert part["entries"][0]["reason"] == f"***.evil.test:443 is not allowed; {e.FIX}"
    # A host the user listed as written is the user's text: a late write names it (a Node.js
    # fetch keeps its connection open until the pod exits, so its entry is often late).
    listed = e.Connection(at=1_700_000_004, method="CONNECT", host="ledger.test", port=443,
                          path=None, allowed=True, status=200, bytes_out=5, bytes_in=7,
                          seconds=0.2, listed=True)  # fmt: skip
    recorder.add(caller("r1"), listed)
    asyncio.run(recorder.flush())
    part = json.loads(body["data"]["gw-a.json"])
    assert [x.get("host") for x in part["entries"]] == ["***.evil.test", None, "ledger.test"]
    assert_clean(json.dumps(body), [value], "the record after a listed host's late write")
    # A reader without the run's values (a record no operator collected) keeps only that host.
    unmasked = json.loads(e.mask_record_part(body["data"]["gw-a.json"], None))
    assert [x.get("host") for x in unmasked["entries"]] == [None, None, "ledger.test"]


def test_the_token_in_a_plain_http_path_is_masked_in_the_record(
    proxy: ProxyThread, upstream: int
) -> None:
    with opener(proxy, "tok-local").open(
        f"http://local.test:{upstream}/v1/tok-local/bills?k=tok-local", timeout=5
    ) as r:
        assert r.status == 200
    conn = record_of(proxy, "local-1").entries[0]
    assert conn.path == "/v1/***/bills"


# --- TLS server names inside tunnels ----------------------------------------------------------


def hello_bytes(name: str | None) -> bytes:
    """A real ClientHello, as Python's ssl module sends it (SNI `name`, or none)."""
    context = ssl.create_default_context()
    if name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_server_name_is_read_from_a_client_hello_however_it_arrives() -> None:
    hello = hello_bytes("Ledger.Test")
    assert e.client_hello(hello) == e.ClientHello(True, True, "ledger.test")
    for cut in (1, 4, 5, 9, len(hello) // 2, len(hello) - 1):
        assert not e.client_hello(hello[:cut]).complete, cut
    # The same handshake split over two TLS records, as a client may send it.
    body = hello[5:]
    head = hello[:3]
    split = (
        head
        + (40).to_bytes(2, "big")
        + body[:40]
        + head
        + (len(body) - 40).to_bytes(2, "big")
        + body[40:]
    )
    assert e.client_hello(split).server_name == "ledger.test"
    assert e.client_hello(hello_bytes(None)) == e.ClientHello(True, True, None)
    assert e.client_hello(b"GET / HTTP/1.1\r\n") == e.ClientHello(True, False)
    assert e.client_hello(b"SSH-2.0-x\r\n").tls is False


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # a ServerHello, not a ClientHello
        b"\x16\x03\x01\x00\x00",  # an empty record
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00",  # cut inside its fields
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",  # claims 16 MB
    ],
)
def test_a_malformed_client_hello_is_refused(data: bytes) -> None:
    with pytest.raises(e.Denied) as refused:
        e.client_hello(data)
    assert refused.value.status == 403 and "ClientHello" in refused.value.reason


def test_a_tunnel_carries_only_the_name_it_was_opened_for() -> None:
    target = e.parse_request_line("CONNECT a.wild.test:443 HTTP/1.1")
    e.check_server_name(target, e.ClientHello(True, True, "a.wild.test"))
    e.check_server_name(target, e.ClientHello(True, False))  # not TLS: bytes
    for sent in ("b.wild.test", "internal-admin.example", None):
        with pytest.raises(e.Denied) as refused:
            e.check_server_name(target, e.ClientHello(True, True, sent))
        assert refused.value.reason.startswith("a.wild.test:443 was opened with ")
        assert sent is None or sent not in refused.value.reason  # the code's text stays out
    # A tunnel to an address inside cidrs may carry any name (every name there is allowed).
    address = e.parse_request_line("CONNECT 10.0.0.5:443 HTTP/1.1")
    e.check_server_name(address, e.ClientHello(True, True, "anything.example"))


class RawSink:
    """A TCP server that keeps what each connection sent (the tunnel's far end)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.got: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while chunk := conn.recv(65536):
                        data += chunk
                except OSError:
                    pass
                self.got.append(data)


def tunnel(proxy: ProxyThread, host: str, port: int, payload: bytes, run: str = "local") -> bytes:
    """CONNECT with the run's token, then `payload` inside; what came back in the tunnel."""
    token = base64.b64encode(f"run:tok-{run}".encode()).decode()
    with socket.create_connection(("127.0.0.1", proxy.settings.proxy_port), timeout=5) as s:
        s.sendall(
            f"CONNECT {host}:{port} HTTP/1.1\r\nProxy-Authorization: Basic {token}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1024)
        assert head.startswith(b"HTTP/1.1 200 "), head
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        back = b""
        while chunk := s.recv(65536):
            back += chunk
        return back


@pytest.mark.parametrize("sent", ["evil.test", "LOCAL.test.evil", None])
def test_a_hostile_client_asking_for_another_name_inside_a_tunnel_reaches_nothing(
    proxy: ProxyThread, sent: str | None
) -> None:
    """Code CONNECTs to its listed host, then asks TLS for another name served on the same
    address (domain fronting, a shared load balancer): the proxy reads the ClientHello before
    anything goes on, closes the tunnel, and records the refusal."""
    far = RawSink()
    proxy.broker.port = far.port  # local.test:<port> is listed for run "local"
    assert tunnel(proxy, "local.test", far.port, hello_bytes(sent)) == b""
    entry = record_of(proxy, "local-1").entries[-1]
    assert (entry.method, entry.host, entry.allowed, entry.status) == (
        "CONNECT", "local.test", False, 403,
    )  # fmt: skip
    assert "was opened with" in entry.reason and "spec" not in entry.reason
    assert sent is None or sent.lower() not in entry.reason.lower()
    for _ in range(40):  # the destination's side closed: it got nothing
        if far.got:
            break
        threading.Event().wait(0.05)
    assert far.got == [b""]
    far.server.close()


def test_the_listed_name_inside_a_tunnel_goes_through(proxy: ProxyThread) -> None:
    far = RawSink()
    proxy.broker.port = far.port
    hello = hello_bytes("local.test")
    tunnel(proxy, "local.test", far.port, hello + b"more")
    entry = record_of(proxy, "local-1").entries[-1]
    assert entry.allowed and entry.status == 200 and entry.bytes_out == len(hello) + 4
    for _ in range(40):
        if far.got:
            break
        threading.Event().wait(0.05)
    assert far.got == [hello + b"more"]
    far.server.close()


def test_a_dry_run_tunnels_only_to_a_host_marked_safe(proxy: ProxyThread) -> None:
    """spec.egress.dryRunSafeHosts: a dry run's HTTPS tunnel to a host the user marked safe is
    opened, with every check a live one gets (the TLS server name too), and recorded as sent
    live; another listed host, not marked safe, still stops the run ("needs a live test")."""
    far = RawSink()
    proxy.broker.port = far.port  # run "localdrysafe": localdrysafe.test marked, *.wild.test not
    hello = hello_bytes("localdrysafe.test")
    tunnel(proxy, "localdrysafe.test", far.port, hello + b"more", run="localdrysafe")
    for _ in range(40):
        if far.got:
            break
        threading.Event().wait(0.05)
    assert far.got == [hello + b"more"]  # the destination got every byte: sent for real
    sent = record_of(proxy, "localdrysafe-1").entries[-1]
    assert (sent.method, sent.host, sent.allowed, sent.status) == (
        "CONNECT", "localdrysafe.test", True, 200,
    )  # fmt: skip
    assert sent.reason == "dry run: sent live (marked safe)"
    assert sent.bytes_out == len(hello) + 4

    conn = http.client.HTTPSConnection("127.0.0.1", proxy.settings.proxy_port, timeout=5)
    token = base64.b64encode(b"run:tok-localdrysafe").decode()
    conn.set_tunnel("a.wild.test", far.port, headers={"Proxy-Authorization": f"Basic {token}"})
    with pytest.raises(OSError) as stopped:
        conn.connect()
    assert "403 Egress Denied: dry run: a.wild.test" in str(stopped.value)
    assert "needs a live test" in str(stopped.value)
    stop = record_of(proxy, "localdrysafe-1", 2).entries[-1]
    assert (stop.host, stop.allowed, stop.status) == ("a.wild.test", False, 403)

    # Marked safe is no exemption from the tunnel's own checks: another TLS name is refused.
    assert tunnel(proxy, "localdrysafe.test", far.port, hello_bytes("evil.test"),
                  run="localdrysafe") == b""  # fmt: skip
    refused = record_of(proxy, "localdrysafe-1", 3).entries[-1]
    assert not refused.allowed and "was opened with" in refused.reason
    assert len(far.got) <= 2 and far.got[1:] in ([], [b""])  # nothing of the refused tunnel
    far.server.close()


def test_only_listed_names_can_be_marked_safe_for_dry_runs() -> None:
    policy = e.Policy.from_spec(
        {
            "egress": {
                "hosts": ["api.test", "*.sandbox.test"],
                "cidrs": ["127.0.0.0/8"],
                # not in hosts: ignored, as the API server refuses it
                "dryRunSafeHosts": ["*.sandbox.test", "evil.test"],
            }
        }
    )
    assert policy.safe_in_dry_run("a.sandbox.test", 443, 443)
    assert not policy.safe_in_dry_run("api.test", 443, 443)  # listed, not marked
    assert not policy.safe_in_dry_run("evil.test", 443, 443)  # marked, not listed
    assert not policy.safe_in_dry_run("a.sandbox.test", 8443, 443)  # the rule's port only
    assert not policy.safe_in_dry_run("127.0.0.1", 443, 443)  # an address: never
