"""The sealing admission webhooks, served by kopf's webhook server over TLS.

Mutating: seals `spec.value` of an IntegrationSecret into `spec.encryptedValue` before the
object is stored, and stamps every new IntegrationSecret with an admission sequence (the
order of the secrets of one key). Validating: refuses any object that still carries
`spec.value`, and a sequence this process did not issue or an update that changes it. The
operator registers both configurations itself (scoped to its tenant namespace), because
kopf's managed configurations cannot be scoped to a namespace.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import ipaddress
import logging
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from docrelay.builders.sealing import (
    GUARD_WEBHOOK_ID,
    REFUSE_WEBHOOK_ID,
    SEAL_WEBHOOK_ID,
    STAMP_WEBHOOK_ID,
    webhook_configurations,
)
from docrelay.handlers.keys import Sealing, sealing_from_memo
from docrelay.kube import service_account_namespace
from docrelay.reconcile.secrets import (
    PlaintextRefused,
    SequenceRefused,
    check_sequence,
    next_sequence,
    refuse_stored_plaintext,
    seal_plaintext,
    stamp_patch,
)
from docrelay.settings import OperatorSettings, SettingsError

log = logging.getLogger("docrelay.sealing")

TLS_VALIDITY = dt.timedelta(days=365)


def webhook_host(settings: OperatorSettings) -> str:
    """Listen on every interface in a pod (the API server dials the pod); loopback elsewhere."""
    if settings.webhook_host:
        return settings.webhook_host
    return "0.0.0.0" if service_account_namespace() else "127.0.0.1"


def serving_certificate(hosts: list[str], directory: Path) -> tuple[Path, Path]:
    """A fresh self-signed serving certificate (it is its own CA bundle); regenerated at each
    start, and the webhook configurations are updated with it."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + TLS_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"


def mounted_certificate(cert_dir: str) -> tuple[Path, Path, Path | None]:
    """(certificate, key, CA bundle or None) in a mounted certificate directory, in the layout
    of a kubernetes.io/tls Secret as cert-manager writes it. Without ca.crt the certificate is
    its own CA bundle. Raises SettingsError naming what is missing."""
    directory = Path(cert_dir)
    cert, key, ca = directory / CERT_FILE, directory / KEY_FILE, directory / CA_FILE
    missing = [path.name for path in (cert, key) if not path.is_file()]
    if missing:
        raise SettingsError(
            f"invalid operator settings: webhook_cert_dir (--webhook-cert-dir or "
            f"DOCRELAY_WEBHOOK_CERT_DIR): {', '.join(missing)} not found in {cert_dir}"
        )
    return cert, key, ca if ca.is_file() else None


class RegisteringWebhookServer:
    """kopf's WebhookServer, plus: each client config it yields is registered by us."""

    def __init__(
        self, inner: kopf.WebhookServer, on_config: Callable[[dict[str, Any]], None]
    ) -> None:
        self.inner = inner
        self.on_config = on_config

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in self.inner(fn):
            await asyncio.to_thread(self.on_config, dict(client_config))
            yield client_config


def configure_webhook_server(kopf_settings: kopf.OperatorSettings, sealing: Sealing) -> None:
    settings = sealing.settings
    host = webhook_host(settings)
    url_host = "127.0.0.1" if host == "0.0.0.0" else host
    service: dict[str, Any] | None = None
    hosts = [url_host]
    if settings.webhook_service:
        service = {"namespace": sealing.namespace, "name": settings.webhook_service, "port": 443}
        hosts = [
            f"{settings.webhook_service}.{sealing.namespace}.svc",
            f"{settings.webhook_service}.{sealing.namespace}.svc.cluster.local",
            url_host,
        ]
    ca_path: Path | None = None
    if settings.webhook_cert_dir:
        # A certificate someone else issues and renews (cert-manager): kopf re-reads the files
        # when they change and restarts its server, and `register` runs again with the new CA.
        cert_path, key_path, ca_path = mounted_certificate(settings.webhook_cert_dir)
        log.info("sealing webhooks: serving the certificate in %s", settings.webhook_cert_dir)
    else:
        directory = Path(tempfile.mkdtemp(prefix="docrelay-webhook-"))
        cert_path, key_path = serving_certificate(hosts, directory)

    def register(client_config: dict[str, Any]) -> None:
        configurations = webhook_configurations(
            namespace=sealing.watched_namespace,
            ca_bundle=client_config["caBundle"],
            base_url=None if service else client_config["url"],
            service=service,
        )
        log.info("sealing webhooks: serving at %s", client_config["url"])
        sealing.set_webhook_configurations(configurations)

    kopf_settings.admission.server = RegisteringWebhookServer(
        kopf.WebhookServer(
            addr=host,
            port=settings.webhook_port,
            host=url_host,
            certfile=str(cert_path),
            pkeyfile=str(key_path),
            cafile=str(ca_path) if ca_path else None,
            # A mounted certificate is re-read this often; a change restarts the server and
            # registers the new CA (kopf compares the files' digest).
            file_check_interval=settings.key_check_seconds,
        ),
        register,
    )
    kopf_settings.admission.managed = None  # we register, scoped to the tenant namespace


def seal_on_admission(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Mutating: replace spec.value with the sealed value before anything is stored."""
    sealing = sealing_from_memo(memo)
    namespace = body.metadata.namespace or ""
    try:
        sealed = seal_plaintext(
            body, namespace, sealing.ring if sealing else None, dt.datetime.now(dt.UTC)
        )
    except PlaintextRefused as exc:
        raise kopf.AdmissionError(str(exc), code=400) from None
    except Exception as exc:
        # Only the type: the text of an unexpected error is not ours and could quote input.
        log.error("sealing webhook: unexpected %s; the object was refused", type(exc).__name__)
        raise kopf.AdmissionError(
            "sealing failed unexpectedly; nothing was stored. Seal with `docrelay seal`", code=500
        ) from None
    if sealed is None:
        return
    patch.spec.update(sealed.spec)
    patch.metadata.annotations.update(sealed.annotations)
    if sealed.labels:
        patch.metadata.labels.update(sealed.labels)
    log.info(
        "sealing webhook: sealed spec.value of IntegrationSecret %s/%s with key %s",
        namespace,
        body.metadata.name or "(generated name)",
        sealed.spec["keyId"],
    )


def refuse_plaintext(body: kopf.Body, **_: Any) -> None:
    """Validating: defence in depth, plaintext that was not sealed is refused."""
    try:
        refuse_stored_plaintext(body)
    except PlaintextRefused as exc:
        raise kopf.AdmissionError(str(exc), code=400) from None


class Sequencer:
    """The admission sequences of this process: strictly increasing (`next_sequence` under a
    lock; admission handlers run in threads), and the recent ones remembered so the
    validating webhook can tell ours from one a user wrote."""

    REMEMBERED = 10_000

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last = 0
        self._recent: collections.deque[str] = collections.deque(maxlen=self.REMEMBERED)
        self._issued: set[str] = set()

    def issue(self) -> int:
        with self._lock:
            self._last = next_sequence(self._last, self._clock())
            text = str(self._last)
            if len(self._recent) == self.REMEMBERED:
                self._issued.discard(self._recent[0])
            self._recent.append(text)
            self._issued.add(text)
            return self._last

    def issued(self, text: str) -> bool:
        with self._lock:
            return text in self._issued


def stamp_sequence(
    sequencer: Sequencer,
    operation: str | None,
    body: kopf.Body,
    old: kopf.Body | None,
    patch: kopf.Patch,
) -> None:
    """Mutating: every CREATE gets this process's next admission sequence (over any value
    the user wrote); an UPDATE that dropped the sequence gets it back."""
    annotations = stamp_patch(operation or "", body, old, sequencer.issue)
    if annotations:
        patch.metadata.annotations.update(annotations)


def guard_sequence(
    sequencer: Sequencer, operation: str | None, body: kopf.Body, old: kopf.Body | None
) -> None:
    """Validating: a sequence is never the user's: not on CREATE, not changed by an UPDATE."""
    try:
        check_sequence(operation or "", body, old, sequencer.issued)
    except SequenceRefused as exc:
        raise kopf.AdmissionError(str(exc), code=400) from None


def register(registry: kopf.OperatorRegistry) -> None:
    resource = ("docrelay.io", "v1alpha1", "integrationsecrets")
    kopf.on.mutate(
        *resource, id=SEAL_WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry
    )(seal_on_admission)
    kopf.on.validate(
        *resource, id=REFUSE_WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry
    )(refuse_plaintext)
    sequencer = Sequencer()

    # kopf passes `operation` and `old` to admission handlers; its WebhookFn type omits them.
    def stamp(body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        stamp_sequence(sequencer, kwargs.get("operation"), body, kwargs.get("old"), patch)

    def guard(body: kopf.Body, **kwargs: Any) -> None:
        guard_sequence(sequencer, kwargs.get("operation"), body, kwargs.get("old"))

    kopf.on.mutate(
        *resource, id=STAMP_WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry
    )(stamp)
    kopf.on.validate(
        *resource, id=GUARD_WEBHOOK_ID, operations=["CREATE", "UPDATE"], registry=registry
    )(guard)
