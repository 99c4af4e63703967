"""The egress proxy's decisions, pure (docs/egress.md): which destinations a run may reach,
which addresses are never reached without an explicit `cidrs` entry, how a proxy request
line is read, and the bounded outbound record of a run.

No I/O here: `docrelay.gateway.proxy` resolves names, opens connections and calls these.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from docrelay.gateway.records import BoundedRecord, merge_parts

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CONNECT_DEFAULT_PORT = 443
HTTP_DEFAULT_PORT = 80
# The header and reason phrase of a refusal: the runner recognises them (EgressDenied).
DENIED_HEADER = "X-Docrelay-Egress-Denied"
DENIED_PHRASE = "Egress Denied"
# Reasons hold no quote characters: clients quote the status line, the runner cuts there.
FIX = "list it in spec.egress.hosts of the Integration"
MAX_RECORD_ENTRIES = 200
MAX_PATH_CHARS = 200
# On a record ConfigMap (`<job>-egress`, `<job>-broker`): "open" while gateways write it with
# paths; the operator sets "collected" when it masks the record with the run's values (the
# attempt is over). A gateway that finds it collected writes its part again without paths (it
# knows no values to mask). The label's name is the egress record's, kept for both.
RECORD_STATE_LABEL = "docrelay.io/egress-record"
RECORD_OPEN, RECORD_COLLECTED = "open", "collected"

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_HOST_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


class Denied(Exception):
    """A request the proxy refuses; `reason` is ours and names only the destination."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# --- the allow-list -----------------------------------------------------------------------


@dataclass(frozen=True)
class HostRule:
    """One `spec.egress.hosts` entry: `api.example.com`, `*.example.com`, optionally `:port`."""

    name: str  # without the `*.`
    wildcard: bool
    port: int | None

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        text = entry.strip().lower()
        port: int | None = None
        if ":" in text:
            text, _, digits = text.rpartition(":")
            port = int(digits)
        wildcard = text.startswith("*.")
        return cls(text[2:] if wildcard else text, wildcard, port)

    def matches(self, host: str, port: int, default_port: int) -> bool:
        if port != (self.port if self.port is not None else default_port):
            return False
        if self.wildcard:  # one or more labels below the name, never the name itself
            return host.endswith("." + self.name)
        return host == self.name


@dataclass(frozen=True)
class Policy:
    """What one run's Integration allows: host rules and address blocks."""

    hosts: tuple[HostRule, ...] = ()
    cidrs: tuple[IpNetwork, ...] = ()
    # Entries of hosts a dry run may tunnel to for real (spec.egress.dryRunSafeHosts).
    dry_run_safe: tuple[HostRule, ...] = ()

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> Policy:
        egress = (spec or {}).get("egress") or {}
        hosts, cidrs, safe = [], [], []
        listed = {str(h) for h in egress.get("hosts") or []}
        for entry in egress.get("hosts") or []:
            try:
                hosts.append(HostRule.parse(str(entry)))
            except ValueError:
                continue  # the API server's schema refuses these; never widen on a bad entry
        for entry in egress.get("cidrs") or []:
            try:
                cidrs.append(ipaddress.ip_network(str(entry), strict=False))
            except ValueError:
                continue
        for entry in egress.get("dryRunSafeHosts") or []:
            if str(entry) not in listed:
                continue  # the API server refuses these too: safe only what is also listed
            try:
                safe.append(HostRule.parse(str(entry)))
            except ValueError:
                continue
        return cls(tuple(hosts), tuple(cidrs), tuple(safe))

    def in_cidrs(self, address: IpAddress) -> bool:
        address = _unmapped(address)
        return any(address.version == net.version and address in net for net in self.cidrs)

    def allows_host(self, host: str, port: int, default_port: int) -> bool:
        return any(rule.matches(host, port, default_port) for rule in self.hosts)

    def safe_in_dry_run(self, host: str, port: int, default_port: int) -> bool:
        """A destination the user marked safe for a dry run to reach for real (a name; an
        address is never marked safe)."""
        if literal_address(host) is not None:
            return False
        return any(rule.matches(host, port, default_port) for rule in self.dry_run_safe)


def normalize_host(host: str) -> str:
    """The host as the allow-list compares it (lower case, no trailing dot), or Denied 400."""
    text = host.strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if literal_address(text) is not None:
        return text
    if len(text) > 253 or not _HOST_RE.match(text):
        raise Denied(400, "not a host name")
    return text


def literal_address(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_destination(policy: Policy, host: str, port: int, default_port: int) -> None:
    """Denied 403 unless the run's Integration lists this host (and port), or the host is an
    address inside its `cidrs`."""
    address = literal_address(host)
    if address is not None:
        if not policy.in_cidrs(address):
            raise Denied(403, f"{host} is not inside spec.egress.cidrs of the Integration")
        return
    if policy.allows_host(host, port, default_port):
        return
    if any(rule.matches(host, rule.port or default_port, default_port) for rule in policy.hosts):
        raise Denied(
            403, f"{host}:{port} is not allowed: port {port} is not listed; {FIX} as {host}:{port}"
        )
    raise Denied(403, f"{host}:{port} is not allowed; {FIX}")


# What the gateway's own texts (its log, `EgressDenied` Events) say in place of a host the
# run's code chose: nobody masks those texts, and the gateway knows none of the run's values.
UNNAMED_HOST = "[a host named by the code]"


def listed_exactly(policy: Policy, host: str) -> bool:
    """A host an exact `spec.egress.hosts` entry names: the user's text, not the code's."""
    return any(not rule.wildcard and rule.name == host for rule in policy.hosts)


def host_as_told(policy: Policy, host: str) -> str:
    """The host as the gateway's log and Events name it: itself when the user listed it
    exactly, else UNNAMED_HOST (the code chose it: an unlisted name, one below a wildcard, an
    address; it can carry a secret value, `<value-in-hex>.example.com`). The record keeps it,
    masked by the operator when it collects the attempt."""
    return host if listed_exactly(policy, host) else UNNAMED_HOST


def reason_as_told(target: Target, reason: str) -> str:
    """A reason (ours, naming the target's host) as the gateway's log and Events say it: the
    host replaced by how they name it (`target.told`)."""
    if not reason or target.told == target.host:
        return reason
    pattern = rf"(?<![\w.-]){re.escape(target.host)}(?![\w-]|\.\w)"
    return re.sub(pattern, target.told, reason)


# --- addresses ----------------------------------------------------------------------------


def _unmapped(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def special_use(address: IpAddress) -> str | None:
    """Why an address is never reached without a `cidrs` entry, or None for a public one."""
    address = _unmapped(address)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "not public"
    return None


def pick_addresses(policy: Policy, host: str, addresses: Sequence[str]) -> list[str]:
    """The resolved addresses the proxy may connect to, in order: public ones, and special-use
    ones only inside the Integration's `cidrs`. None left: Denied 403 naming the reason."""
    chosen: list[str] = []
    refused: list[tuple[str, str]] = []
    for text in addresses:
        address = literal_address(text.split("%")[0])
        if address is None:
            continue
        reason = special_use(address)
        if reason is None or policy.in_cidrs(address):
            if str(address) not in chosen:
                chosen.append(str(address))
        else:
            refused.append((str(address), reason))
    if not chosen:
        if not refused:
            raise Denied(502, f"{host} has no address")
        first, reason = refused[0]
        raise Denied(
            403,
            f"{host} resolves to {first}, a {reason} address; such a destination needs an "
            "entry in spec.egress.cidrs of the Integration",
        )
    return chosen


# --- the request line and credentials -----------------------------------------------------


# The request methods the record and the gateway's log name as sent: HTTP's (RFC 9110, PATCH
# from RFC 5789) and WebDAV's (RFC 4918). Any other name is the code's free text, where a secret
# could sit, so it is recorded as "OTHER" (the request itself is relayed as sent).
RECORDED_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
     "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"}
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    method: str
    host: str
    port: int
    path: str  # origin-form for plain HTTP ("/x?y"); "" for CONNECT
    default_port: int
    recorded_path: str | None = None  # what the record keeps of `path` (record_path)
    told: str = UNNAMED_HOST  # the host as the gateway's log and Events name it (host_as_told)

    @property
    def recorded_method(self) -> str:
        return self.method if self.method in RECORDED_METHODS else "OTHER"


def parse_request_line(line: str) -> Target:
    """`CONNECT host:port HTTP/1.1` or `GET http://host[:port]/path HTTP/1.1`; Denied 400
    for anything else (origin-form requests are not proxy requests)."""
    parts = line.strip().split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise Denied(400, "not an HTTP/1.x proxy request")
    method, target, _ = parts
    if not re.fullmatch(r"[A-Z]{1,16}", method):
        raise Denied(400, "not an HTTP method")
    if method == "CONNECT":
        host, sep, digits = target.rpartition(":")
        if not sep or not digits.isdigit():
            raise Denied(400, "CONNECT needs host:port")
        port = int(digits)
        if not 0 < port < 65536:
            raise Denied(400, "not a port")
        return Target(method, normalize_host(host), port, "", CONNECT_DEFAULT_PORT)
    if not target.lower().startswith("http://"):
        if target.lower().startswith("https://"):
            raise Denied(400, "https:// goes through CONNECT")
        raise Denied(400, "a proxy request names an absolute http:// URL")
    try:
        split = urlsplit(target)
        port = split.port or HTTP_DEFAULT_PORT
    except ValueError:
        raise Denied(400, "not a URL") from None
    if not split.hostname or split.username is not None:
        raise Denied(400, "not a URL")
    path = split.path or "/"
    if split.query:
        path += "?" + split.query
    return Target(method, normalize_host(split.hostname), port, path, HTTP_DEFAULT_PORT)


def proxy_token(header: str | None) -> str | None:
    """The broker token in `Proxy-Authorization`: Basic (the password; any user name) or
    Bearer. None when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep and password else None


def refusal_response(status: int, reason: str, extra: Mapping[str, str] | None = None) -> bytes:
    """The proxy's answer to a refused request. For 403 the reason phrase carries the
    refusal so clients that show only the status line (urllib, httpx on CONNECT) show it."""
    phrases = {
        400: "Bad Request",
        407: "Proxy Authentication Required",
        429: "Too Many Requests",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }
    safe = reason.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")
    phrase = f"{DENIED_PHRASE}: {safe}" if status == 403 else phrases.get(status, "Refused")
    body = f"docrelay egress proxy: {safe}\n".encode()
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **(extra or {}),
    }
    if status == 403:
        headers[DENIED_HEADER] = safe
    head = f"HTTP/1.1 {status} {phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


# --- the outbound record ------------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """One connection a run made (or tried) through the proxy."""

    at: float  # unix time it started
    method: str
    host: str
    port: int
    path: str | None  # plain HTTP only, without the query; CONNECT hides it in TLS
    allowed: bool
    status: int
    bytes_out: int  # from the run to the destination
    bytes_in: int
    seconds: float
    reason: str = ""
    listed: bool = False  # the host is a `spec.egress.hosts` entry as written: the user's text

    def to_json(self, paths: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "method": self.method,
            "port": self.port,
            "allowed": self.allowed,
            "status": self.status,
            "bytesOut": self.bytes_out,
            "bytesIn": self.bytes_in,
            "seconds": round(self.seconds, 3),
        }
        if paths or self.listed:  # a host the code chose and the reason naming it are its text
            body["host"] = self.host
        if paths:
            if self.path:
                body["path"] = self.path
            if self.reason:
                body["reason"] = self.reason
        if self.listed:  # readers without the run's values may still name it (mask_record_part)
            body["listed"] = True
        return body


def record_path(path: str, mask: Callable[[str], str] | None = None) -> str:
    """What the record keeps of a plain-HTTP path: no query (tokens live there), masked with
    what the gateway knows (the run's broker token), bounded. The run's secret values are
    masked by the operator when it collects the attempt (`mask_record_part`)."""
    kept = path.split("?", 1)[0]
    return (mask(kept) if mask else kept)[:MAX_PATH_CHARS]


# The fields of a record's entries that the run's code chooses freely, so a secret value can
# sit in them: the egress record's hosts (refused ones too: `CONNECT <value-in-hex>.example.com`),
# plain-HTTP paths and the refusal reasons that name the host; the broker record's request
# hosts and paths, account names, upload file names, action keys and prop names (`<job>-broker`,
# gateway/dryrun.py). A host the user listed is the user's text and stays readable: masking
# changes a text only where a value appears in it.
FREE_TEXT_FIELDS = ("host", "path", "reason", "account", "fileName", "tool", "props")


def mask_record_part(text: str, mask: Callable[[str], str] | None) -> str:
    """One gateway's part of a record (`<job>-egress` or `<job>-broker`, JSON) with each
    entry's free text (FREE_TEXT_FIELDS) masked with the run's masker, or dropped when there is
    none (the values could not be opened: fail closed). A part that is not a record is masked
    as text (with no masker: emptied)."""
    try:
        part = json.loads(text)
    except ValueError:
        part = None
    if not isinstance(part, dict):
        return mask(text) if mask else "{}"
    entries = part.get("entries")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        # A host the user listed as written is the user's text (Connection.listed): kept.
        listed = entry.get("listed") is True
        for name in FREE_TEXT_FIELDS:
            if name not in entry or (name == "host" and listed and mask is None):
                continue
            value = entry[name]
            if mask is not None and isinstance(value, str):
                entry[name] = mask(value)
            elif mask is not None and isinstance(value, list):
                entry[name] = [mask(v) for v in value if isinstance(v, str)]
            else:
                del entry[name]
    return json.dumps(part, separators=(",", ":"))


RUN_RECORD_COUNTS = ("connections", "denied", "bytesOut", "bytesIn")


@dataclass
class RunRecord(BoundedRecord[Connection]):
    """A run's connections, bounded: counts of all, the last `limit` entries."""

    limit: int = MAX_RECORD_ENTRIES
    connections: int = 0
    denied: int = 0
    bytes_out: int = 0
    bytes_in: int = 0

    def count(self, entry: Connection) -> None:
        self.connections += 1
        self.denied += 0 if entry.allowed else 1
        self.bytes_out += entry.bytes_out
        self.bytes_in += entry.bytes_in

    def counts(self) -> dict[str, int]:
        values = (self.connections, self.denied, self.bytes_out, self.bytes_in)
        return dict(zip(RUN_RECORD_COUNTS, values, strict=True))


def merge_records(parts: Iterable[Mapping[str, Any]], limit: int = MAX_RECORD_ENTRIES) -> dict:
    """One egress record from the parts several gateway replicas wrote: counts summed,
    entries merged by time, the last `limit` kept."""
    return merge_parts(parts, RUN_RECORD_COUNTS, limit)


# --- TLS inside a CONNECT tunnel --------------------------------------------------------------

MAX_CLIENT_HELLO_BYTES = 64 * 1024


@dataclass(frozen=True)
class ClientHello:
    """What the first bytes a client sends into a tunnel say about TLS: `complete` False while
    more bytes are needed; `tls` False for another protocol; `server_name` the SNI host name
    (lower case, without a trailing dot), None when the ClientHello has none."""

    complete: bool
    tls: bool = True
    server_name: str | None = None


def client_hello(data: bytes) -> ClientHello:
    """Read the server name (SNI, RFC 6066) from a TLS ClientHello, which may span several
    records. Denied 403 for a handshake that is not a well-formed ClientHello: a client that
    speaks TLS must let the proxy see which name it asks for."""
    if not data:
        return ClientHello(complete=False)
    if data[0] != 0x16:  # not a TLS handshake record: another protocol
        return ClientHello(complete=True, tls=False)
    handshake = bytearray()
    position = 0
    while True:  # gather the handshake bytes of consecutive records
        if len(data) < position + 5:
            return ClientHello(complete=False)
        kind, length = data[position], int.from_bytes(data[position + 3 : position + 5], "big")
        if kind != 0x16 or length == 0 or length > 18432:
            raise Denied(403, "the tunnel's TLS ClientHello is malformed")
        if len(data) < position + 5 + length:
            return ClientHello(complete=False)
        handshake += data[position + 5 : position + 5 + length]
        position += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != 0x01:  # the first handshake message is the ClientHello
                raise Denied(403, "the tunnel's TLS handshake does not start with a ClientHello")
            needed = 4 + int.from_bytes(handshake[1:4], "big")
            if needed > MAX_CLIENT_HELLO_BYTES:
                raise Denied(403, "the tunnel's TLS ClientHello is too large")
            if len(handshake) >= needed:
                return ClientHello(True, True, _server_name(bytes(handshake[4:needed])))


def _server_name(body: bytes) -> str | None:
    def field(at: int, size: int) -> tuple[bytes, int]:
        if at + size > len(body):
            raise Denied(403, "the tunnel's TLS ClientHello is malformed")
        length = int.from_bytes(body[at : at + size], "big")
        if at + size + length > len(body):
            raise Denied(403, "the tunnel's TLS ClientHello is malformed")
        return body[at + size : at + size + length], at + size + length

    at = 2 + 32  # client_version, random
    _, at = field(at, 1)  # session id
    _, at = field(at, 2)  # cipher suites
    _, at = field(at, 1)  # compression methods
    if at == len(body):
        return None  # no extensions
    extensions, _ = field(at, 2)
    offset = 0
    while offset + 4 <= len(extensions):
        kind = int.from_bytes(extensions[offset : offset + 2], "big")
        length = int.from_bytes(extensions[offset + 2 : offset + 4], "big")
        value = extensions[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if kind != 0:  # server_name
            continue
        names = value[2:]
        while len(names) >= 3:
            name_type, size = names[0], int.from_bytes(names[1:3], "big")
            name = names[3 : 3 + size]
            if name_type == 0:
                try:
                    return name.decode("ascii").lower().rstrip(".")
                except UnicodeDecodeError:
                    raise Denied(403, "the tunnel's TLS server name is not a host name") from None
            names = names[3 + size :]
        return None
    return None


def check_server_name(target: Target, hello: ClientHello) -> None:
    """Denied 403 unless the TLS server name inside a tunnel is the name the tunnel was opened
    (and checked) for. A tunnel to an address (inside `cidrs`) may carry any name, and another
    protocol than TLS is relayed as bytes. The reason never repeats the name the client sent
    (it is the code's text, and could carry a value)."""
    if not hello.tls or literal_address(target.host) is not None:
        return
    if hello.server_name == target.host:
        return
    what = "no TLS server name" if hello.server_name is None else "another TLS server name"
    raise Denied(
        403,
        f"{target.host}:{target.port} was opened with {what} inside the tunnel; a tunnel "
        f"reaches only the name it was opened for, so connect to the host you listed",
    )
