"""Sends the notifications spec.notify asks for (decided in docrelay.reconcile.notify), from one
background thread so a slow webhook never holds up a run's handler.

The URL is an IntegrationSecret's value: opened in memory when a notice goes out, never
logged (httpx puts the URL in its exception texts, so only the exception's type is logged),
never in an Event or a status. Its host is resolved once and the operator connects to an
address that was checked (reconcile.notify.pin_url): a tenant cannot point the operator at
loopback, private or link-local addresses (cloud metadata) unless the install allows it.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import httpx

from docrelay.gateway.signatures import sign_standard_webhook, standard_webhooks_key
from docrelay.models.integration import Integration, NotifyEvent, NotifyFormat
from docrelay.reconcile.notify import (
    Gate,
    Notice,
    TargetRefused,
    pin_url,
    slack_body,
    standard_body,
    url_host,
)

log = logging.getLogger("docrelay.notify")

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# (namespace, integration, keys) -> each key's opened value; raises when one does not open.
OpenKeys = Callable[[str, str, tuple[str, ...]], Mapping[str, bytes]]


THREAD = "docrelay-notify"
# (host, port) -> the addresses it resolves to (none when it does not resolve).
Resolve = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


class _NoUrlFromThisThread(logging.Filter):
    """httpx logs every request's URL at INFO; a notification's URL is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD


_NO_URL = _NoUrlFromThisThread()


class Notifier:
    def __init__(
        self,
        open_keys: OpenKeys,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        *,
        allow_private: bool = False,
        resolve: Resolve = resolve_host,
    ) -> None:
        self.open_keys = open_keys
        self.clock = clock
        self.allow_private = allow_private  # settings.notify_allow_private_targets
        self.resolve = resolve
        self.gate = Gate()
        self.queue: queue.Queue[tuple[Integration, Notice]] = queue.Queue(maxsize=1000)
        self.http = httpx.Client(timeout=TIMEOUT, follow_redirects=False, transport=transport)
        self.thread = threading.Thread(target=self._loop, name=THREAD, daemon=True)
        for name in ("httpx", "httpcore"):
            if _NO_URL not in logging.getLogger(name).filters:
                logging.getLogger(name).addFilter(_NO_URL)
        self.stopped = threading.Event()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def notify(self, integration: Integration, notice: Notice) -> None:
        """Queue a notice if the integration asks for it; never blocks, never raises."""
        notify = integration.spec.notify
        if notify is None or not notify.wants(notice.event):
            return
        try:
            self.queue.put_nowait((integration, notice))
        except queue.Full:
            log.warning("notification queue full; %s for %s dropped", notice.event.value,
                        notice.integration)  # fmt: skip

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                integration, notice = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.send(integration, notice)
            except Exception as exc:  # one bad notice must not end the thread
                log.warning(
                    "notification %s for %s/%s failed (%s)",
                    notice.event.value,
                    notice.namespace,
                    notice.integration,
                    type(exc).__name__,
                )

    def send(self, integration: Integration, notice: Notice) -> int | None:
        """Send one notice now (if the gate admits it); the HTTP status, or None if not sent."""
        notify = integration.spec.notify
        if notify is None:
            return None
        admitted, dropped = self.gate.admit(notice, self.clock())
        what = f"{notice.event.value} for {notice.namespace}/{notice.integration}"
        if not admitted:
            log.info("notification %s not sent: a duplicate or over the rate limit", what)
            return None
        keys = (notify.url_secret,) + ((notify.signing_secret,) if notify.signing_secret else ())
        opened = self.open_keys(notice.namespace, notice.integration, keys)
        url = opened[notify.url_secret].decode(errors="replace").strip()
        if not url.startswith(("https://", "http://")):
            log.warning(
                "notification %s not sent: the value of %s is not an http(s) URL",
                what,
                notify.url_secret,
            )
            return None
        try:
            pinned = pin_url(url, self.resolve(*url_host(url)), self.allow_private)
        except TargetRefused as exc:
            log.warning("notification %s not sent: %s", what, exc)
            return None
        headers = {"content-type": "application/json", "host": pinned.host}
        if notify.format is NotifyFormat.STANDARD_WEBHOOKS and notify.signing_secret:
            now = datetime.now(UTC).replace(microsecond=0)
            body = standard_body(notice, now, dropped)
            message_id = f"msg_{uuid.uuid4().hex}"
            stamp = int(now.timestamp())
            key = standard_webhooks_key(opened[notify.signing_secret].decode().strip())
            headers |= {
                "webhook-id": message_id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign_standard_webhook(body, key, message_id, stamp),
            }
        else:
            body = slack_body(notice, dropped)
        try:
            response = self.http.post(
                pinned.url,
                content=body,
                headers=headers,
                extensions={"sni_hostname": pinned.sni} if pinned.sni else None,
            )
        except httpx.HTTPError as exc:
            log.warning("notification %s not delivered (%s)", what, type(exc).__name__)
            return None
        log.info("notification %s sent: HTTP %s", what, response.status_code)
        return response.status_code


def dead_letter_notice(namespace: str, integration: str, run: str, error_class: str) -> Notice:
    return Notice(
        namespace,
        integration,
        NotifyEvent.DEAD_LETTERED,
        run,
        f"run {run} was dead-lettered ({error_class}); see `docrelay logs {run}`, then "
        f"`docrelay replay {integration}` once fixed",
    )


def agent_failed_notice(namespace: str, integration: str, revision: str, runs: str) -> Notice:
    return Notice(
        namespace,
        integration,
        NotifyEvent.AGENT_TEST_FAILED,
        revision,
        f"the agent's revision {revision} failed its test runs ({runs}); it cannot be "
        "deployed (see status.agent, `docrelay diff " + revision + "`)",
    )


def paused_notice(namespace: str, integration: str, failures: int, since: str) -> Notice:
    return Notice(
        namespace,
        integration,
        NotifyEvent.PAUSED,
        f"since {since}",  # each pause is its own notice
        f"paused after {failures} failed runs in a row; new runs wait until "
        f"`docrelay resume {integration}`",
    )
