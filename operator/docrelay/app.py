"""`docrelay operator`: build settings and clients once, then run kopf with our handlers."""

from __future__ import annotations

import logging
import os
import secrets
import socket

import kopf

from docrelay import handlers, heap, standby
from docrelay.handlers.context import MEMO_KEY, OperatorContext
from docrelay.handlers.keys import scopes
from docrelay.kube import Kube, kubeconfig_namespace, service_account_namespace
from docrelay.kube.lease import LeaderElection
from docrelay.reconcile.lease import webhook_endpoint
from docrelay.settings import OperatorSettings, resolve_keys_namespace, resolve_namespace

log = logging.getLogger("docrelay.operator")


def run_operator(settings: OperatorSettings) -> None:
    """Run until stopped (SIGINT/SIGTERM). Raises SettingsError or ConfigError before start."""
    namespace = resolve_namespace(
        settings,
        service_account_namespace(),
        kubeconfig_namespace(settings.kubeconfig, settings.context),
    )
    if settings.webhook_cert_dir:
        from docrelay.handlers.webhooks import mounted_certificate

        mounted_certificate(settings.webhook_cert_dir)  # missing files: exit 2 before start
    keys_at = resolve_keys_namespace(settings, *scopes(settings))  # a bad one: exit 2 before start
    heap.limit_arenas()  # before any thread starts (docrelay.heap)
    kube = Kube.connect(settings.kubeconfig, settings.context)
    kopf.configure(verbose=settings.log_level == "DEBUG")
    logging.getLogger().setLevel(settings.log_level)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    scope = f"namespace {namespace}" if namespace else "all namespaces"
    log.info(
        "docrelay operator starting: watching %s; sealing keys in namespace %s; health at %s",
        scope,
        keys_at,
        settings.health_url,
    )
    election = None
    if settings.leader_election:
        election = _stand_by(settings, kube, namespace)
    try:
        kopf.run(
            registry=registry,
            # One active process: alone, or the Lease's holder (kopf's peering pauses
            # handlers but is not a lock, and our own workers would go on).
            standalone=True,
            clusterwide=namespace is None,
            namespaces=[namespace] if namespace else (),
            liveness_endpoint=settings.health_url,
            memo=kopf.Memo({MEMO_KEY: OperatorContext(settings=settings, kube=kube)}),
            # kopf types it as peering.Identity, a NewType of str, not exported at the top.
            identity=operator_identity(),  # type: ignore[arg-type]
        )
    finally:
        if election is not None:
            election.release()  # a clean stop: a standby takes over at once


def operator_identity() -> str:
    """This process's name for kopf. kopf's own default asks the password database for the
    user, and the image's uid 65532 has no entry there: the operator died at start-up in a
    real container (found by the real-node tier, docs/realnode.md)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _stand_by(settings: OperatorSettings, kube: Kube, namespace: str | None) -> LeaderElection:
    """Wait until this process holds the operator Lease, serving liveness and relaying the
    webhook port to the active process meanwhile (docrelay.standby), then keep the Lease; a
    process that loses it exits at once, before another may act (docs/operator.md)."""
    from docrelay.handlers.webhooks import webhook_host

    where = (
        settings.leader_election_namespace
        or namespace
        or service_account_namespace()
        or kubeconfig_namespace(settings.kubeconfig, settings.context)
        or "default"
    )
    listen = webhook_host(settings)
    advertised = settings.pod_ip or (
        socket.gethostbyname(socket.gethostname()) if listen == "0.0.0.0" else listen
    )
    identity = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    election = LeaderElection(
        kube.api_client,
        where,
        identity,
        webhook_endpoint=webhook_endpoint(advertised, settings.webhook_port),
    )
    with standby.serving(
        (settings.health_host, settings.health_port),
        (listen, settings.webhook_port),
        election.active_webhook,
    ):
        election.acquire()

    def lost() -> None:
        logging.shutdown()
        os._exit(1)  # no graceful stop: it could still act while another process does

    election.keep(lost)
    return election
