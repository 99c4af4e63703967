"""The egress proxy (docs/egress.md): run pods' only way out, in the gateway's process.

An asyncio server on its own port. Each connection: read the request head (CONNECT or an
absolute-form plain HTTP request), take the run's broker token from `Proxy-Authorization`,
prove who is calling as the broker does (TokenReview, pod -> Job -> active run; cached per
token for a few seconds, concurrent checks of one token shared), check the destination against
the run's Integration's `spec.egress`, resolve the name once, refuse special-use addresses
outside its `cidrs`, connect to the address that was checked (no second resolution), then
relay bytes both ways and record the connection for the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from docrelay.gateway.broker import MAX_TOKEN_CHARS, Broker, Caller, Refusal
from docrelay.gateway.dryrun import (
    NOT_SENT,
    SENT_LIVE,
    is_dry_stop,
    simulated_http_response,
    tunnel_stopped_reason,
    writes,
)
from docrelay.gateway.egress import (
    RECORD_OPEN,
    RECORD_STATE_LABEL,
    Connection,
    Denied,
    Policy,
    RunRecord,
    Target,
    check_destination,
    check_server_name,
    client_hello,
    host_as_told,
    literal_address,
    parse_request_line,
    pick_addresses,
    proxy_token,
    reason_as_told,
    record_path,
    refusal_response,
)
from docrelay.gateway.kubeapi import ApiUnavailable, KubeApi
from docrelay.gateway.records import BoundedRecord
from docrelay.gateway.settings import GatewaySettings
from docrelay.masking import Masker
from docrelay.models.common import GROUP, VERSION

log = logging.getLogger(__name__)
audit = logging.getLogger("docrelay.egress.audit")

MAX_HEAD_BYTES = 32 * 1024
HEAD_TIMEOUT_SECONDS = 10.0
CHUNK = 64 * 1024
RECORD_SUFFIX = "-egress"
FLUSH_SECONDS = 2.0
BATCH_SECONDS = 0.5  # after a connection ends, gather others this long before writing
REFUSAL_CACHE_SECONDS = 2.0
FORGET_SECONDS = 600.0  # a record untouched this long (its run is over) leaves memory
HOP_BY_HOP = frozenset(
    {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "upgrade"}
)


def record_config_map_name(job: str) -> str:
    """The record of one attempt sits next to its log: `<job>-egress` (`<job>-log`)."""
    return f"{job}{RECORD_SUFFIX}"


@dataclass
class _Identity:
    until: float
    task: asyncio.Task[tuple[Caller, Policy]]
    mask: Callable[[str], str]  # the token's forms, out of what the record keeps


@dataclass
class _Record:
    caller: Caller
    record: BoundedRecord[Any]  # RunRecord (connections), or ActionRecord (the broker's actions)
    dirty: bool = True
    touched: float = field(default_factory=time.monotonic)
    collected: bool = False  # the operator has masked the record: write no paths any more
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one write of it at a time
    added: int = 0  # entries added so far
    written: int = 0  # of which the record held this many at its last write


class Recorder:
    """Each attempt's connections, written in batches to a ConfigMap owned by the run
    (`<job>-egress`). Every gateway process writes its own key (`<host>-<start>.json`) with a
    merge patch, so replicas never overwrite each other; readers merge the keys. The broker's
    actions are recorded the same way in `<job>-broker` (suffix, component and record kind).
    Both carry what code names freely (plain-HTTP paths; the broker's request paths and file
    names), which the operator masks with the run's values when it collects the attempt
    (RECORD_STATE_LABEL); a write after that leaves it out."""

    def __init__(
        self,
        kube: KubeApi | None,
        entries: int,
        replica: str | None = None,
        *,
        suffix: str = RECORD_SUFFIX,
        component: str = "egress-record",
        make: Callable[[int], BoundedRecord[Any]] = RunRecord,
    ) -> None:
        self.kube = kube
        self.entries = entries
        self.suffix, self.component, self.make = suffix, component, make
        self.replica = replica or f"{socket.gethostname()}-{int(time.time())}-{os.getpid()}"
        self.records: dict[tuple[str, str], _Record] = {}
        self._wake: asyncio.Event | None = None  # set by run(): something to write

    def key(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-._" else "-" for c in self.replica)
        return f"{safe[:200]}.json"

    def add(self, caller: Caller, entry: Any) -> None:
        ref = (caller.namespace, caller.job)
        held = self.records.get(ref)
        if held is None:
            held = self.records[ref] = _Record(caller, self.make(self.entries))
        held.record.add(entry)
        held.added += 1
        held.dirty = True
        held.touched = time.monotonic()
        if self._wake is not None:
            self._wake.set()

    def record_of(self, namespace: str, job: str) -> Any:
        held = self.records.get((namespace, job))
        return held.record if held else None

    def manifest(self, held: _Record) -> dict[str, Any]:
        caller = held.caller
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{caller.job}{self.suffix}",
                "namespace": caller.namespace,
                "labels": {
                    "docrelay.io/integration": caller.integration,
                    "docrelay.io/run": caller.run,
                    "docrelay.io/attempt": str(caller.attempt),
                    "app.kubernetes.io/managed-by": "docrelay",
                    "app.kubernetes.io/component": self.component,
                    RECORD_STATE_LABEL: RECORD_OPEN,
                },
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "IntegrationRun",
                        "name": caller.run,
                        "uid": caller.run_uid,
                    }
                ],
            },
            "data": {self.key(): self._part(held)},
        }

    def _part(self, held: _Record, stored: str | None = None) -> str:
        """This process's part: whole while the record is open; once collected, the part as
        stored (masked by the operator) and, without their free text, the entries added since
        (counts are this process's own)."""
        if not held.collected:
            record = held.record.to_json()
        else:
            record = held.record.to_json(paths=False)
            try:
                before = json.loads(stored or "{}").get("entries") or []
            except (ValueError, AttributeError):
                before = []
            fresh = min(held.added - held.written, len(record["entries"]))
            entries = before + (record["entries"][-fresh:] if fresh > 0 else [])
            record["entries"] = entries[-self.entries :] if self.entries else []
        return json.dumps(record, separators=(",", ":"))

    async def _stored_part(self, named: str) -> str | None:
        assert self.kube is not None
        found = await self.kube.get_json(named)
        return ((found or {}).get("data") or {}).get(self.key())

    async def flush(self) -> None:
        """Write every changed record; a failure leaves it for the next flush."""
        if self.kube is None:
            return
        now = time.monotonic()
        for ref, held in list(self.records.items()):
            if not held.dirty:
                if now - held.touched > FORGET_SECONDS:
                    del self.records[ref]
                continue
            await self._write(ref, held)

    async def write_now(self, caller: Caller) -> None:
        """Write the attempt's record now, not in the next batch: the broker does, before it
        answers an action, so the record holds the action before the pod can exit and the
        operator collects (masks) it. A write after that would carry no names at all."""
        ref = (caller.namespace, caller.job)
        held = self.records.get(ref)
        if held is not None and held.dirty and self.kube is not None:
            await self._write(ref, held)

    async def _write(self, ref: tuple[str, str], held: _Record) -> None:
        assert self.kube is not None
        async with held.lock:  # writes of one record in order: a stale part never lands last
            if not held.dirty:
                return
            held.dirty = False
            added = held.added
            body = self.manifest(held)
            path = f"/api/v1/namespaces/{ref[0]}/configmaps"
            named = f"{path}/{body['metadata']['name']}"
            try:
                if not held.collected:
                    await self._write_guarded(held, path, named, body)
                else:
                    await self._write_late(held, path, named, body)
                held.written = added
            except ApiUnavailable as exc:
                held.dirty = True
                log.warning("%s of %s/%s not written yet: %s", self.component, *ref, exc)

    async def _write_guarded(
        self, held: _Record, path: str, named: str, body: dict[str, Any]
    ) -> None:
        """Write this process's part only while the record is open (a JSON patch testing the
        label); once the operator has collected and masked it, write the part without paths."""
        assert self.kube is not None
        key = self.key()
        label = "/metadata/labels/" + RECORD_STATE_LABEL.replace("~", "~0").replace("/", "~1")
        operations: list[Mapping[str, Any]] = [
            {"op": "test", "path": label, "value": RECORD_OPEN},
            {"op": "add", "path": f"/data/{key}", "value": body["data"][key]},
        ]
        status = await self.kube.json_patch(named, operations)
        if status == 404:
            if await self.kube.create_json(path, body):
                return
            status = await self.kube.json_patch(named, operations)  # created meanwhile
        if status == 422:  # collected (or written by a gateway that sets no label)
            held.collected = True
            await self._write_late(held, path, named, body)

    async def _write_late(self, held: _Record, path: str, named: str, body: dict[str, Any]) -> None:
        """After collection: keep what the operator masked, add what came since without its
        free text (the gateway knows no values to mask it with)."""
        assert self.kube is not None
        data = {self.key(): self._part(held, await self._stored_part(named))}
        exists = await self.kube.patch_json(named, {"data": data})
        if not exists and not await self.kube.create_json(path, {**body, "data": data}):
            await self.kube.patch_json(named, {"data": data})  # created meanwhile

    async def run(self, stop: asyncio.Event, every: float = FLUSH_SECONDS) -> None:
        """Write soon after a connection ends (BATCH_SECONDS gathers a burst), and every
        `every` seconds whatever happens (a failed write is tried again)."""
        self._wake = asyncio.Event()
        while not stop.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (stop, self._wake)]
            await asyncio.wait(waits, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()
            if not stop.is_set():
                await asyncio.sleep(BATCH_SECONDS)
            self._wake.clear()
            await self.flush()


class EgressProxy:
    def __init__(
        self,
        settings: GatewaySettings,
        broker: Broker,
        recorder: Recorder,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.recorder = recorder
        self.clock = clock
        self.resolve_overrides: Mapping[str, str] = settings.egress_resolve
        self._identities: dict[str, _Identity] = {}
        self._open: dict[tuple[str, str], int] = {}
        self._server: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._announced: set[tuple[str, str, str]] = set()  # (namespace, job, destination)
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self.settings.host,
            self.settings.proxy_port,
            limit=MAX_HEAD_BYTES,
            backlog=1024,
        )
        self._flusher = asyncio.create_task(self.recorder.run(self._stop))
        log.info("egress proxy on %s:%s", self.settings.host, self.settings.proxy_port)

    async def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._flusher is not None:
            await self._flusher  # one last flush
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    # --- who is calling ---------------------------------------------------------------------

    def token_mask(self, token: str) -> Callable[[str], str]:
        """Masks the token's forms (what the record keeps of a path holds none of them)."""
        held = self._identities.get(hashlib.sha256(token.encode()).hexdigest())
        return held.mask if held is not None else Masker([token]).mask

    async def identify(self, token: str) -> tuple[Caller, Policy]:
        """The caller and its Integration's policy; one check per token per
        `egress_auth_cache_seconds`, shared by concurrent connections. Refusals are cached
        too, for at most REFUSAL_CACHE_SECONDS (a flood of bad tokens costs one review each,
        and a pod that asked a moment too early is not refused for long); an unavailable API
        server is not cached."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        held = self._identities.get(key)
        if held is None or held.until <= now:
            if len(self._identities) > 10000:
                self._identities = {k: v for k, v in self._identities.items() if v.until > now}
            held = _Identity(
                now + self.settings.egress_auth_cache_seconds,
                asyncio.ensure_future(self._lookup(token)),
                Masker([token]).mask,
            )
            self._identities[key] = held
        try:
            return await asyncio.shield(held.task)
        except ApiUnavailable:
            if self._identities.get(key) is held:
                del self._identities[key]
            raise
        except Refusal:
            held.until = min(held.until, now + REFUSAL_CACHE_SECONDS)
            raise

    async def _lookup(self, token: str) -> tuple[Caller, Policy]:
        caller = await self.broker.identify(token)
        return caller, Policy.from_spec(await self.broker.integration_spec(caller))

    # --- one connection ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._handle(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:  # one connection never takes the proxy down
            log.exception("egress proxy connection failed")
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started, t0 = time.time(), time.monotonic()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return
        except ConnectionError:
            return
        lines = head.decode("latin-1").split("\r\n")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        try:
            target = parse_request_line(lines[0])
        except Denied as exc:
            writer.write(refusal_response(exc.status, exc.reason))
            return
        token = proxy_token(
            next((v for n, v in headers if n.lower() == "proxy-authorization"), None)
        )
        if token is None or len(token) > MAX_TOKEN_CHARS:
            writer.write(
                refusal_response(
                    407,
                    "the run's broker token is needed as the proxy password",
                    {"Proxy-Authenticate": 'Basic realm="docrelay-egress"'},
                )
            )
            return
        try:
            caller, policy = await self.identify(token)
        except Refusal as exc:
            audit.info("egress outcome=refused:%d reason=%r", exc.status, exc.reason)
            writer.write(
                refusal_response(
                    407,
                    f"the token was not accepted: {exc.reason}",
                    {"Proxy-Authenticate": 'Basic realm="docrelay-egress"'},
                )
            )
            return
        except ApiUnavailable as exc:
            log.warning("egress proxy answering 503: %s", exc)
            writer.write(
                refusal_response(
                    503,
                    "temporarily unavailable; retry later",
                    {"Retry-After": str(self.settings.retry_after_seconds)},
                )
            )
            return
        target = replace(target, told=host_as_told(policy, target.host))
        if target.path:
            target = replace(target, recorded_path=record_path(target.path, self.token_mask(token)))
        run_key = (caller.namespace, caller.run)
        if self._open.get(run_key, 0) >= self.settings.egress_max_connections_per_run:
            self._finish(caller, target, started, t0, False, 429, 0, 0, "too many connections")
            writer.write(refusal_response(429, "too many connections open for this run"))
            return
        self._open[run_key] = self._open.get(run_key, 0) + 1
        try:
            await self._forward(caller, policy, target, headers, reader, writer, started, t0)
        finally:
            left = self._open.get(run_key, 1) - 1
            if left:
                self._open[run_key] = left
            else:
                self._open.pop(run_key, None)

    async def _forward(
        self,
        caller: Caller,
        policy: Policy,
        target: Target,
        headers: list[tuple[str, str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        started: float,
        t0: float,
    ) -> None:
        live = ""  # the record's reason for what a dry run sends for real
        try:
            check_destination(policy, target.host, target.port, target.default_port)
            if (
                caller.dry_run
                and target.method == "CONNECT"
                and policy.safe_in_dry_run(target.host, target.port, target.default_port)
            ):
                live = SENT_LIVE  # the user marked it safe: tunnelled, and recorded as sent
            elif caller.dry_run and await self._dry(caller, target, headers, reader, writer):
                return
            upstream_reader, upstream_writer = await asyncio.wait_for(
                self._connect(policy, target), self.settings.egress_connect_timeout_seconds
            )
        except Denied as exc:
            self._finish(caller, target, started, t0, False, exc.status, 0, 0, exc.reason)
            await self.recorder.write_now(caller)  # before the answer (see _dry)
            writer.write(refusal_response(exc.status, exc.reason))
            if exc.status == 403 and not is_dry_stop(exc.reason):
                self._announce(caller, target, exc.reason)
            return
        except TimeoutError:
            reason = f"{target.host}:{target.port} did not answer in time"
            self._finish(caller, target, started, t0, True, 504, 0, 0, reason)
            writer.write(refusal_response(504, reason))
            return
        status = 200
        try:
            if target.method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                refused: list[Denied] = []
                sent, received = await self._relay(
                    reader, writer, upstream_reader, upstream_writer,
                    first=lambda src: self._tunnel_start(src, target), refused=refused,
                )  # fmt: skip
                if refused:  # the client's TLS asked for another name: nothing was sent
                    reason = refused[0].reason
                    self._finish(caller, target, started, t0, False, 403, 0, received, reason)
                    self._announce(caller, target, reason)
                    return
            else:
                request = self._origin_request(target, headers)
                upstream_writer.write(request)
                status_box: list[int] = []
                sent, received = await self._relay(
                    reader, writer, upstream_reader, upstream_writer, status_box
                )
                sent += len(request)
                status = status_box[0] if status_box else 502
        finally:
            upstream_writer.close()
        self._finish(caller, target, started, t0, True, status, sent, received, live)
        if live:  # what a dry run sent for real is written at once, for the judge to see
            await self.recorder.write_now(caller)

    async def _dry(
        self,
        caller: Caller,
        target: Target,
        headers: list[tuple[str, str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """A dry run's connection (gateway/dryrun.py): True when it was answered here and
        nothing was sent. An HTTPS tunnel is stopped (Denied 403, "needs a live test"); a
        plain-HTTP write gets a simulated reply once its body is read; a plain read goes on."""
        if target.method == "CONNECT":
            raise Denied(403, tunnel_stopped_reason(target.host, target.port))
        if not writes(target.method):
            return False
        t0, started = time.monotonic(), time.time()
        await _discard_body(headers, reader)
        # Recorded before the answer, as the broker does: the pod may exit at once and the
        # operator collect (mask) the record; a record first written after that is not masked.
        self._finish(caller, target, started, t0, True, 200, 0, 0, NOT_SENT)
        await self.recorder.write_now(caller)
        writer.write(simulated_http_response(target.method, target.host, target.port))
        await writer.drain()
        return True

    async def _connect(
        self, policy: Policy, target: Target
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve once, check every address, connect to a checked one (never re-resolve)."""
        if literal_address(target.host) is not None:
            addresses = [target.host]
        elif target.host in self.resolve_overrides:
            addresses = [self.resolve_overrides[target.host]]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError):
                raise Denied(502, f"{target.host} cannot be resolved") from None
            addresses = [str(info[4][0]) for info in infos]
        last: OSError | None = None
        for address in pick_addresses(policy, target.host, addresses):
            try:
                return await asyncio.open_connection(address, target.port, limit=CHUNK)
            except OSError as exc:
                last = exc
        raise Denied(
            502,
            f"{target.host}:{target.port} refused the connection"
            if isinstance(last, ConnectionRefusedError)
            else f"{target.host}:{target.port} cannot be reached",
        )

    @staticmethod
    def _origin_request(target: Target, headers: list[tuple[str, str]]) -> bytes:
        """The request as the destination gets it: origin form, no proxy or hop-by-hop
        headers, and the Host that was checked (a Host naming another site on the same
        address is replaced)."""
        host = target.host if ":" not in target.host else f"[{target.host}]"
        if target.port != target.default_port:
            host = f"{host}:{target.port}"
        lines = [f"{target.method} {target.path} HTTP/1.1", f"Host: {host}"]
        lines += [
            f"{n}: {v}" for n, v in headers if n.lower() not in HOP_BY_HOP and n.lower() != "host"
        ]
        lines.append("Connection: close")  # one request per proxied connection
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
        status_box: list[int] | None = None,
        *,
        first: Callable[[asyncio.StreamReader], Awaitable[bytes]] | None = None,
        refused: list[Denied] | None = None,
    ) -> tuple[int, int]:
        """Bytes both ways until the destination is done. `first`: what the client sends
        first is read and checked by it before anything goes on (a tunnel's TLS server name);
        its Denied goes into `refused`, and the destination gets nothing."""
        idle = self.settings.egress_idle_timeout_seconds
        counts = [0, 0]  # to the destination, from it

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, index: int) -> None:
            try:
                if index == 0 and first is not None:
                    try:
                        data = await first(src)
                    except Denied as exc:
                        if refused is not None:
                            refused.append(exc)
                        dst.close()  # the destination gets nothing, and its answer stops
                        return
                    if not data:
                        return
                    counts[0] += len(data)
                    dst.write(data)
                    await dst.drain()
                while True:
                    data = await asyncio.wait_for(src.read(CHUNK), idle)
                    if not data:
                        break
                    if index == 1 and status_box is not None and not status_box:
                        status_box.append(_status_of(data))
                    counts[index] += len(data)
                    dst.write(data)
                    await dst.drain()
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    if dst.can_write_eof():
                        dst.write_eof()

        out_task = asyncio.ensure_future(pump(reader, upstream_writer, 0))
        in_task = asyncio.ensure_future(pump(upstream_reader, writer, 1))
        try:
            await in_task  # the destination has finished: nothing more can reach it
        finally:
            for task in (out_task, in_task):
                task.cancel()
        return counts[0], counts[1]

    async def _tunnel_start(self, reader: asyncio.StreamReader, target: Target) -> bytes:
        """The first bytes the client sends into a tunnel. For TLS, the whole ClientHello, whose
        server name must be the name the tunnel was opened for (Denied otherwise); another
        protocol's first bytes go on as they are. Empty when the client closed first."""
        data = await asyncio.wait_for(reader.read(CHUNK), self.settings.egress_idle_timeout_seconds)
        while data:
            hello = client_hello(data)
            if hello.complete:
                check_server_name(target, hello)
                return data
            more = await asyncio.wait_for(reader.read(CHUNK), HEAD_TIMEOUT_SECONDS)
            if not more:
                return b""  # closed in the middle of its ClientHello: nothing goes on
            data += more
        return b""

    def _announce(self, caller: Caller, target: Target, reason: str) -> None:
        """A Warning Event on the run, once per attempt and destination, so `kubectl
        describe` shows what was refused (names only; the reason is ours). A host the code
        chose is not named (reason_as_told): the record names it, masked once collected."""
        key = (caller.namespace, caller.job, f"{target.host}:{target.port}")
        if key in self._announced or self.recorder.kube is None:
            return
        if len(self._announced) > 10000:
            self._announced.clear()
        self._announced.add(key)
        task = asyncio.ensure_future(self._post_event(caller, reason_as_told(target, reason)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_event(self, caller: Caller, reason: str) -> None:
        assert self.recorder.kube is not None
        run = {
            "kind": "IntegrationRun",
            "metadata": {"name": caller.run, "namespace": caller.namespace, "uid": caller.run_uid},
        }
        try:
            await self.recorder.kube.post_event(
                run, "EgressDenied", f"attempt {caller.attempt}: {reason}", "docrelay-egress-proxy"
            )
        except ApiUnavailable as exc:
            log.info("egress Event for %s/%s not written: %s", caller.namespace, caller.run, exc)

    def _finish(
        self,
        caller: Caller,
        target: Target,
        started: float,
        t0: float,
        allowed: bool,
        status: int,
        sent: int,
        received: int,
        reason: str,
    ) -> None:
        entry = Connection(
            at=started,
            method=target.recorded_method,
            host=target.host,
            port=target.port,
            path=target.recorded_path,
            allowed=allowed,
            status=status,
            bytes_out=sent,
            bytes_in=received,
            seconds=time.monotonic() - t0,
            reason=reason,
            listed=target.told == target.host,
        )
        self.recorder.add(caller, entry)
        audit.info(
            "egress namespace=%s run=%s attempt=%d method=%s host=%s port=%d allowed=%s "
            "status=%d out=%d in=%d reason=%r",
            caller.namespace, caller.run, caller.attempt, target.recorded_method, target.told,
            target.port, allowed, status, sent, received, reason_as_told(target, reason),
        )  # fmt: skip


MAX_DRY_BODY_BYTES = 16 * 1024 * 1024


async def _discard_body(headers: list[tuple[str, str]], reader: asyncio.StreamReader) -> None:
    """Read a request's body (Content-Length, or chunked up to its last chunk) so the simulated
    answer is not cut off by a reset; bounded, and given up on after the idle time."""
    named = {n.lower(): v for n, v in headers}
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        if "chunked" in named.get("transfer-encoding", "").lower():
            seen = 0
            while seen < MAX_DRY_BODY_BYTES:
                size_line = await asyncio.wait_for(reader.readline(), HEAD_TIMEOUT_SECONDS)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await asyncio.wait_for(reader.readuntil(b"\r\n"), HEAD_TIMEOUT_SECONDS)
                    return
                await asyncio.wait_for(reader.readexactly(size + 2), HEAD_TIMEOUT_SECONDS)
                seen += size
            return
        left = min(int(named.get("content-length", "0") or 0), MAX_DRY_BODY_BYTES)
        while left > 0:
            data = await asyncio.wait_for(reader.read(min(left, CHUNK)), HEAD_TIMEOUT_SECONDS)
            if not data:
                return
            left -= len(data)


def _status_of(first: bytes) -> int:
    parts = first[:32].split(b" ", 2)
    try:
        return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else 502
    except ValueError:
        return 502
