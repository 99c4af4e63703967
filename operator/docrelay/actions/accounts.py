"""Connected accounts as a person handles them: a Pipedream Connect link made with the
tenant's Pipedream credentials (Secret `docrelay-pipedream`, read with the person's own
Kubernetes rights: whoever may read it may make links, nobody else can), the accounts
Pipedream holds for an external user, and the ConnectedAccount that names one
(docs/pipedream.md). No credential is ever put into a message."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from docrelay.actions import Refused
from docrelay.kube import ACCOUNTS, Kube, KubeError
from docrelay.models.account import ConnectedAccountSpec
from docrelay.models.common import API_VERSION, GROUP, VERSION
from docrelay.pipedream import ConnectClient
from docrelay.pipedream.credentials import DEFAULT_SECRET, CredentialsError, credentials_from_secret
from docrelay.reconcile import connections
from docrelay.reconcile.connections import REQUEST_ANNOTATION, ConnectRequest

EXIT_USAGE = 2
ACCOUNT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a ConnectedAccount's name
GATEWAY_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")


def connect_client(
    kube: Kube, namespace: str, secret: str = DEFAULT_SECRET, environment: str | None = None
) -> ConnectClient:
    data = kube.read_secret_data(namespace, secret)
    try:
        credentials = credentials_from_secret(data, secret)
    except CredentialsError as exc:
        raise Refused(f"{exc} (namespace {namespace})") from None
    return ConnectClient(
        credentials.url,
        credentials.project_id,
        environment or credentials.environment,
        credentials.client_id,
        credentials.client_secret,
    )


def check_account(app: str, external_user: str) -> None:
    """Refuse an app slug or external user id a ConnectedAccount could not hold."""
    try:
        ConnectedAccountSpec(app=app, account_id="apn_check", external_user_id=external_user)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise Refused(f"invalid account: {problems}", EXIT_USAGE) from None


def with_app(link: str, app: str) -> str:
    """The Connect link with the app preselected, as Pipedream's docs add it."""
    return link + ("&" if "?" in link else "?") + f"app={app}"


def save_connected_account(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    app: str,
    account_id: str,
    external_user: str,
    environment: str,
) -> dict[str, Any]:
    """Create the ConnectedAccount, or point an existing one at the new account (an account
    connected again after it died)."""
    spec = {
        "app": app,
        "accountId": account_id,
        "externalUserId": external_user,
        "environment": environment,
    }
    body = {
        "apiVersion": API_VERSION,
        "kind": "ConnectedAccount",
        "metadata": {"name": name},
        "spec": spec,
    }
    existing = kube.create_or_get(ACCOUNTS, namespace, body)
    if (existing.get("spec") or {}).get("accountId") == account_id:
        return existing
    try:
        return dict(
            kube.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, ACCOUNTS, name, {"spec": spec}
            )
        )
    except ApiException as exc:
        raise KubeError(
            f"Kubernetes API {exc.status} ({exc.reason}) while updating ConnectedAccount "
            f"{namespace}/{name}",
            exc.status,
        ) from None


def request_connection(
    kube: Kube, namespace: str, integration: str, request: ConnectRequest
) -> None:
    """Leave the connection request on the Integration (digests only), with the person's own
    rights: the gateway creates the ConnectedAccount only for a webhook that matches it
    (docs/pipedream.md). A newer request replaces an older one: the latest link wins."""
    patch = {"metadata": {"annotations": {REQUEST_ANNOTATION: request.annotation()}}}
    try:
        kube.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "integrations", integration, patch
        )
    except ApiException as exc:
        if exc.status == 403:
            raise Refused(
                f"you may not change Integration {integration}, so you may not connect its accounts"
            ) from None
        raise KubeError(
            f"Kubernetes API {exc.status} ({exc.reason}) while recording the connection "
            f"request on Integration {namespace}/{integration}",
            exc.status,
        ) from None


@dataclass(frozen=True)
class ConnectLink:
    url: str  # the Connect link, the app preselected
    expires_at: str
    webhook: bool  # Pipedream reports the connection to the gateway, which creates the account


def check_webhook_target(gateway_url: str, integration: str, account: str) -> None:
    """Refuse what the connection webhook could not use: the gateway's public URL (http or
    https, no query), and the ConnectedAccount's name."""
    if not GATEWAY_URL.match(gateway_url):
        raise Refused(
            f"{gateway_url!r} is not the gateway's public URL (https://host[/path])", EXIT_USAGE
        )
    if not ACCOUNT_NAME.match(account):
        raise Refused(
            f"{account!r} is not a ConnectedAccount name (lowercase, digits, '-')", EXIT_USAGE
        )
    if not ACCOUNT_NAME.match(integration):
        raise Refused(f"{integration!r} is not an Integration name", EXIT_USAGE)


def connect_link(
    pipedream: ConnectClient,
    kube: Kube,
    namespace: str,
    *,
    app: str,
    external_user: str,
    gateway_url: str | None = None,
    integration: str | None = None,
    account: str | None = None,
    success_redirect_uri: str | None = None,
    error_redirect_uri: str | None = None,
) -> ConnectLink:
    """A single-use Connect link for `app` and the external user (the console's and the CLI's).

    With `gateway_url` (the tenant gateway's public URL) the Connect token carries a
    `webhook_uri` naming the Integration and a fresh nonce, and the connection request is left
    on the Integration with the person's own rights: Pipedream reports the connection to the
    gateway, which creates ConnectedAccount `account` (docs/pipedream.md, "The connection
    webhook"). Without it the link is all: the person (or the console, on their way back)
    creates the ConnectedAccount."""
    if gateway_url and not (integration and account):
        raise Refused("the connection webhook needs the Integration and the account's name")
    nonce = connections.new_nonce()
    webhook = (
        connections.webhook_uri(gateway_url, namespace, str(integration), nonce)
        if gateway_url
        else None
    )
    answer = pipedream.create_connect_token(
        external_user,
        success_redirect_uri=success_redirect_uri,
        error_redirect_uri=error_redirect_uri,
        webhook_uri=webhook,
    )
    link = str(answer.get("connect_link_url") or "")
    if not link:
        raise Refused("Pipedream answered without a connect link")
    if webhook:
        token = str(answer.get("token") or "")
        if not token:
            raise Refused("Pipedream answered without a Connect token")
        # The request the gateway matches Pipedream's webhook against.
        request_connection(
            kube,
            namespace,
            str(integration),
            connections.new_request(
                account=str(account),
                app=app,
                external_user=external_user,
                environment=pipedream.environment,
                nonce=nonce,
                connect_token=token,
                now=time.time(),
            ),
        )
    return ConnectLink(with_app(link, app), str(answer.get("expires_at") or ""), bool(webhook))
