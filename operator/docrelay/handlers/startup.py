"""kopf's settings and login, from the operator's settings."""

from __future__ import annotations

import kopf

from docrelay.kube import load_configuration
from docrelay.settings import OperatorSettings

PERSISTENCE_PREFIX = "docrelay.io"
FINALIZER = "docrelay.io/finalizer"


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    persistence = kopf_settings.persistence
    persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PERSISTENCE_PREFIX)
    persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PERSISTENCE_PREFIX, key="last-handled-configuration"
    )
    persistence.finalizer = FINALIZER
    # kopf would post handler failures with the exception's text as Events; we post our own.
    kopf_settings.posting.enabled = False
    # Tenant mode: no cluster-wide CRD or namespace watch (no ClusterRole needed); the
    # resources found at startup are served.
    kopf_settings.scanning.disabled = not settings.all_namespaces
    # Notice a stalled watch within a minute.
    kopf_settings.watching.server_timeout = 60
    kopf_settings.watching.client_timeout = 90


def login(settings: OperatorSettings) -> kopf.ConnectionInfo:
    """Credentials for kopf from the same kubeconfig/context the operator's client uses."""
    configuration = load_configuration(settings.kubeconfig, settings.context)
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )
