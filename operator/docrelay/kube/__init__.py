"""The only code that calls the Kubernetes API (operator and CLI). 404/409 policy lives here.

The official client is synchronous: the operator calls it from sync handlers (kopf runs them
in threads). Every API failure becomes a KubeError whose message we wrote: the HTTP status and
what we were doing, never the server's body (it can echo object contents).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from docrelay.builders.revision import INTEGRATION_LABEL
from docrelay.models.common import GROUP, VERSION

SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
EVENT_SOURCE = "docrelay-operator"

INTEGRATIONS = "integrations"
REVISIONS = "integrationrevisions"
SECRETS = "integrationsecrets"
ACCOUNTS = "connectedaccounts"


class KubeError(Exception):
    """An API call failed; `str()` is safe to show to users and in Events."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(KubeError):
    """No usable kubeconfig or in-cluster credentials."""


def _api_error(exc: ApiException, doing: str) -> KubeError:
    reason = {401: "unauthorized", 403: "forbidden", 404: "not found", 409: "conflict"}.get(
        exc.status or 0, "error"
    )
    return KubeError(f"Kubernetes API {exc.status} ({reason}) while {doing}", exc.status)


TOKEN_REFRESH_SECONDS = 1.0


def _throttled(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """The client calls its token refresh hook before every request, and the kubeconfig's and
    the in-cluster one re-apply the whole configuration each time (setting `host` scans the
    process environment for proxies: about 40 us of CPU per request). Here it runs at most
    once a second per configuration; a token is re-read or renewed as before, at most a
    second later."""
    last: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def refresh(configuration: Any) -> None:
        nonlocal hook
        now = time.monotonic()
        with lock:
            if now - last.get(configuration, -TOKEN_REFRESH_SECONDS) < TOKEN_REFRESH_SECONDS:
                return
            last[configuration] = now
        hook(configuration)
        # The client's hook installs itself again as it re-applies the configuration.
        installed = configuration.refresh_api_key_hook
        if installed is not refresh:
            hook = installed
            configuration.refresh_api_key_hook = refresh

    return refresh


def load_configuration(
    kubeconfig: str | None = None, context: str | None = None
) -> client.Configuration:
    """Client configuration: the kubeconfig (flag, $KUBECONFIG, ~/.kube/config), or in-cluster
    credentials when no kubeconfig is given or found."""
    configuration = client.Configuration()
    explicit = kubeconfig or context or os.environ.get("KUBECONFIG")
    if not explicit and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
            return _with_throttled_refresh(configuration)
        except ConfigException:
            pass
    try:
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (ConfigException, FileNotFoundError, OSError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        detail = f" (context {context!r})" if context else ""
        raise ConfigError(f"cannot load the kubeconfig {where}{detail}") from exc
    return _with_throttled_refresh(configuration)


def _with_throttled_refresh(configuration: client.Configuration) -> client.Configuration:
    hook = configuration.refresh_api_key_hook
    if hook is not None:
        configuration.refresh_api_key_hook = _throttled(hook)
    return configuration


def kubeconfig_namespace(kubeconfig: str | None = None, context: str | None = None) -> str | None:
    """The namespace of the kubeconfig's context (current, or the one named), if it sets one."""
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, FileNotFoundError, OSError):
        return None
    chosen = next((c for c in contexts if c["name"] == context), None) if context else current
    if not chosen:
        return None
    namespace = chosen.get("context", {}).get("namespace")
    return str(namespace) if namespace else None


def service_account_namespace() -> str | None:
    """The pod's namespace when running in a cluster, else None."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to post an Event about it."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str | None = None


class Kube:
    """Typed access to what docrelay reads and writes."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        return cls(client.ApiClient(load_configuration(kubeconfig, context)))

    # --- docrelay objects ------------------------------------------------------------------

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading {plural} {namespace}/{name}") from None

    def list_objects(
        self, plural: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of one docrelay kind in the namespace, or in every namespace (None)."""
        try:
            if namespace is None:
                result = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, label_selector=label_selector or ""
                )
            else:
                result = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, label_selector=label_selector or ""
                )
        except ApiException as exc:
            where = f"in {namespace}" if namespace is not None else "in every namespace"
            raise _api_error(exc, f"listing {plural} {where}") from None
        return list(result.get("items", []))

    def list_revisions(self, namespace: str, integration: str) -> list[dict[str, Any]]:
        """The revisions of one integration (by label), oldest first."""
        items = self.list_objects(REVISIONS, namespace, f"{INTEGRATION_LABEL}={integration}")
        items = [i for i in items if i.get("spec", {}).get("integration") == integration]
        return sorted(
            items, key=lambda i: (i["metadata"]["creationTimestamp"], i["metadata"]["name"])
        )

    def create_or_get(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create; if it already exists (409), return the existing one: creation is idempotent."""
        name = body["metadata"]["name"]
        try:
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body
            )
        except ApiException as exc:
            if exc.status != 409:
                raise _api_error(exc, f"creating {plural} {namespace}/{name}") from None
        existing = self.get(plural, namespace, name)
        if existing is None:  # deleted in between; the next run creates it again
            raise KubeError(f"{plural} {namespace}/{name} vanished while being created")
        return existing

    def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status; the object as the API server stored it."""
        try:
            return dict(
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, plural, name, {"status": status}
                )
            )
        except ApiException as exc:
            raise _api_error(exc, f"writing the status of {plural} {namespace}/{name}") from None

    def patch_annotations(
        self, plural: str, namespace: str, name: str, annotations: dict[str, str | None]
    ) -> None:
        """Merge-patch annotations only (None removes one); spec is never touched."""
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, {"metadata": {"annotations": annotations}}
            )
        except ApiException as exc:
            if exc.status == 404:
                raise KubeError(f"{plural} {namespace}/{name} not found", 404) from None
            raise _api_error(exc, f"annotating {plural} {namespace}/{name}") from None

    def delete(
        self, plural: str, namespace: str, name: str, preconditions: dict[str, str] | None = None
    ) -> bool:
        """Delete; already gone (404) is fine. With `preconditions` ({"uid": ...,
        "resourceVersion": ...}) only the object as it was read: one that changed since (409)
        is left alone. True if this call deleted it."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body=client.V1DeleteOptions(preconditions=preconditions) if preconditions else None,
            )
        except ApiException as exc:
            if exc.status == 404 or (preconditions and exc.status == 409):
                return False
            raise _api_error(exc, f"deleting {plural} {namespace}/{name}") from None
        return True

    # --- ConfigMaps ------------------------------------------------------------------------

    def create_config_map(self, namespace: str, body: dict[str, Any]) -> None:
        """Create; one that already exists (409) is fine: code ConfigMaps are immutable."""
        try:
            self.core.create_namespaced_config_map(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                name = body["metadata"]["name"]
                raise _api_error(exc, f"creating ConfigMap {namespace}/{name}") from None

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (base64 values), or None if it does not exist. The values never go
        into a message."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading Secret {namespace}/{name}") from None
        return dict(secret.data or {})

    def read_config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            config_map = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc, f"reading ConfigMap {namespace}/{name}") from None
        return dict(config_map.data or {})

    # --- Events and identity ---------------------------------------------------------------

    def post_event(self, about: ObjectRef, event_type: str, reason: str, message: str) -> None:
        """Post an Event. Callers pass only messages they wrote (no foreign text, no secrets)."""
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{about.name}.", namespace=about.namespace),
            involved_object=client.V1ObjectReference(
                api_version=about.api_version,
                kind=about.kind,
                name=about.name,
                namespace=about.namespace,
                uid=about.uid,
            ),
            type=event_type,
            reason=reason,
            message=message[:1024],
            source=client.V1EventSource(component=EVENT_SOURCE),
            reporting_component=EVENT_SOURCE,
            reporting_instance=EVENT_SOURCE,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(about.namespace, event)
        except ApiException as exc:
            raise _api_error(exc, f"posting an Event about {about.kind} {about.name}") from None

    def whoami(self) -> str:
        """The user name the API server sees for these credentials (SelfSubjectReview)."""
        try:
            review = client.AuthenticationV1Api(self.api_client).create_self_subject_review(
                client.V1SelfSubjectReview()
            )
        except ApiException:
            return "unknown"
        user = review.status.user_info if review.status else None
        return (user.username if user and user.username else None) or "unknown"


def latest_event_message(kube: Kube, namespace: str, name: str, reason: str) -> str | None:
    """The message of the newest Event with this reason about the named object, if any."""
    try:
        events = kube.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},reason={reason}"
        )
    except ApiException:
        return None
    if not events.items:
        return None
    newest = max(
        events.items,
        key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp,
    )
    return str(newest.message or "") or None
