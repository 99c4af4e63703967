"""`docrelay operator`: build settings and clients once, then run kopf with our handlers."""

from __future__ import annotations

import logging

import kopf

from docrelay import handlers
from docrelay.handlers.context import MEMO_KEY, OperatorContext
from docrelay.handlers.keys import scopes
from docrelay.kube import Kube, kubeconfig_namespace, service_account_namespace
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
    kopf.run(
        registry=registry,
        standalone=True,  # one replica (Recreate); peering is not a lease lock
        clusterwide=namespace is None,
        namespaces=[namespace] if namespace else (),
        liveness_endpoint=settings.health_url,
        memo=kopf.Memo({MEMO_KEY: OperatorContext(settings=settings, kube=kube)}),
    )
