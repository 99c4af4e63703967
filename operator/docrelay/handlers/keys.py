"""The sealing key ring: loaded (or created) at startup, renewed on schedule and on request,
its newest certificate published, the webhook configurations kept registered.

One background thread checks every `key_check_seconds`; handlers read the ring through
`Sealing.ring`, which is swapped whole, so a reader never sees half a renewal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from docrelay.builders.sealing import (
    KEYS_SECRET,
    RENEW_HANDLED_ANNOTATION,
    cert_config_map,
    keys_secret,
)
from docrelay.kube import Kube, KubeError, kubeconfig_namespace, service_account_namespace
from docrelay.kube import sealing as kube_sealing
from docrelay.reconcile.keys import decide_renewal
from docrelay.sealing import KeyRing
from docrelay.settings import OperatorSettings, resolve_keys_namespace, resolve_namespace

log = logging.getLogger("docrelay.sealing")

SEALING_MEMO_KEY = "docrelay.sealing"


def scopes(settings: OperatorSettings) -> tuple[str | None, str]:
    """(the watched namespace or None in cluster mode, the operator's own namespace)."""
    kubeconfig_ns = kubeconfig_namespace(settings.kubeconfig, settings.context)
    watched = resolve_namespace(settings, service_account_namespace(), kubeconfig_ns)
    own = watched or service_account_namespace() or kubeconfig_ns or "default"
    return watched, own


class UnreadableKeys(Exception):
    """The key Secret exists but does not hold a key ring; the message names no key material."""


class KeysInOldPlace(Exception):
    """No key Secret in the keys namespace, but one in the operator's own namespace, where
    versions before the keys namespace kept it: it is moved by a person, never by the
    operator (a tenant user could have planted it there), and no new keys are made meanwhile
    (they would not open the existing secrets)."""


class Sealing:
    """The operator's sealing state: the key ring and the webhooks' registration."""

    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.watched_namespace, self.namespace = scopes(settings)
        # The certificate is published in `namespace`; the private keys live here.
        self.keys_namespace = resolve_keys_namespace(
            settings, self.watched_namespace, self.namespace
        )
        self._ring: KeyRing | None = None
        self._lock = threading.Lock()  # one check at a time (thread and webhook callback)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.webhook_configurations: tuple[dict[str, Any], ...] = ()
        self.on_first_load: list[Callable[[], None]] = []  # after start(), when keys appear

    @property
    def ring(self) -> KeyRing | None:
        return self._ring

    # --- the key ring -------------------------------------------------------------------------

    def check(self, now: datetime | None = None) -> None:
        """Load or create the ring, renew it if due or requested, publish the certificate and
        register the webhooks. Failures are logged; the next check tries again."""
        with self._lock:
            try:
                self._check_keys(now or datetime.now(UTC))
            except KubeError as exc:
                log.error("sealing keys: %s; will retry", exc)
            except UnreadableKeys as exc:
                # An unreadable key Secret is never overwritten: that would lose every key.
                log.error(
                    "sealing keys: the Secret %s/%s cannot be read (%s); restore it from the "
                    "backup (docs/secrets.md)",
                    self.keys_namespace,
                    KEYS_SECRET,
                    exc,
                )
            except KeysInOldPlace:
                log.error(
                    "sealing keys: no Secret %s/%s, but %s/%s exists (where earlier versions "
                    "kept the keys, readable by tenant users): move it to %s, then delete it "
                    '(docs/secrets.md, "Moving the keys"); no new keys are made meanwhile',
                    self.keys_namespace,
                    KEYS_SECRET,
                    self.namespace,
                    KEYS_SECRET,
                    self.keys_namespace,
                )
            try:
                self._register_webhooks()
            except KubeError as exc:
                log.error("sealing webhooks: registration failed: %s; will retry", exc)

    def _old_place_holds_keys(self) -> bool:
        """A key Secret in the operator's own namespace (where it was before); False where the
        operator may not look there (an install that never kept keys there grants nothing)."""
        try:
            return kube_sealing.read_secret(self.kube, self.namespace, KEYS_SECRET) is not None
        except KubeError as exc:
            if exc.status == 403:
                return False
            raise

    def _check_keys(self, now: datetime) -> None:
        kube, namespace = self.kube, self.keys_namespace
        stored = kube_sealing.read_secret(kube, namespace, KEYS_SECRET)
        if stored is None:
            if self._old_place_holds_keys():
                raise KeysInOldPlace()
            ring = KeyRing.create(now)
            if kube_sealing.create_secret(kube, namespace, keys_secret(namespace, ring, {})):
                log.info(
                    "sealing keys: created %s/%s with key %s; back it up (docs/secrets.md)",
                    namespace,
                    KEYS_SECRET,
                    ring.newest.key_id,
                )
                self._use(ring)
                return
            stored = kube_sealing.read_secret(kube, namespace, KEYS_SECRET)  # 409: theirs
            if stored is None:
                raise KubeError(f"Secret {namespace}/{KEYS_SECRET} vanished while being created")
        try:
            ring = KeyRing.from_secret_data(stored.data)
        except ValueError as exc:
            raise UnreadableKeys(str(exc)) from None
        period = timedelta(days=self.settings.key_renewal_days)
        renewal = decide_renewal(ring, stored.annotations, now, period)
        if renewal is not None:
            renewed = ring.renewed(now)
            annotations = dict(stored.annotations)
            if renewal.handled_request is not None:
                annotations[RENEW_HANDLED_ANNOTATION] = renewal.handled_request
            body = keys_secret(namespace, renewed, annotations)
            if kube_sealing.replace_secret(kube, namespace, body, stored.resource_version):
                log.info(
                    "sealing keys: renewed (%s): new key %s seals from now on; %d keys kept",
                    renewal.why,
                    renewed.newest.key_id,
                    len(renewed.keys),
                )
                ring = renewed
            else:
                log.info("sealing keys: the Secret changed meanwhile; renewal on the next check")
        self._use(ring)

    def _use(self, ring: KeyRing) -> None:
        previous = self._ring
        self._ring = ring
        kube_sealing.apply_config_map(
            self.kube, self.namespace, cert_config_map(self.namespace, ring)
        )
        if previous is None or previous.newest.key_id != ring.newest.key_id:
            log.info(
                "sealing keys: %d key(s) loaded; newest %s", len(ring.keys), ring.newest.key_id
            )
        if previous is None and self._thread is not None:
            for callback in self.on_first_load:
                callback()

    # --- webhook configurations ---------------------------------------------------------------

    def set_webhook_configurations(self, configurations: tuple[dict[str, Any], ...]) -> None:
        """Called when the webhook server (re)starts with a client config."""
        with self._lock:
            self.webhook_configurations = configurations
            try:
                self._register_webhooks()
            except KubeError as exc:
                log.error("sealing webhooks: registration failed: %s; will retry", exc)

    def _register_webhooks(self) -> None:
        if not self.settings.register_webhooks:
            return
        for body in self.webhook_configurations:
            if kube_sealing.apply_webhook_configuration(self.kube, body):
                log.info(
                    "sealing webhooks: %s %s registered", body["kind"], body["metadata"]["name"]
                )

    # --- the background check -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="docrelay-sealing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.key_check_seconds):
            try:
                self.check()
            except Exception:  # never let the thread die; details stay in our log
                log.exception("sealing keys: unexpected error in the periodic check")


def sealing_from_memo(memo: Any) -> Sealing | None:
    sealing = memo.get(SEALING_MEMO_KEY) if hasattr(memo, "get") else None
    return sealing if isinstance(sealing, Sealing) else None


def start_sealing(memo: kopf.Memo, kube: Kube, settings: OperatorSettings) -> Sealing:
    """At startup: the first check (key generation takes a second or two), then the thread."""
    sealing = Sealing(kube, settings)
    memo[SEALING_MEMO_KEY] = sealing
    sealing.check()
    sealing.start()
    return sealing
