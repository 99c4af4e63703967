"""Pipedream Connect's connection webhook in: `POST /v1/pipedream/connections/{namespace}/
{integration}/{nonce}` (docs/pipedream.md, "The connection webhook").

The decisions are pure (docrelay.reconcile.connections); here are the reads and the one write.
Order: tenant (404), size and media type (413, 415), JSON (400), the Integration's connection
request: nonce, expiry, event, Connect token, environment (404, 410, 422, 403), a replay (409),
the account as Pipedream answers it with the tenant's credentials (403; Pipedream away: 503),
then the ConnectedAccount is created, or pointed at the new account (201). A refusal writes
nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from docrelay.gateway.accounts import Accounts
from docrelay.gateway.kubeapi import ApiUnavailable, KubeApi
from docrelay.gateway.settings import GatewaySettings
from docrelay.models.common import GROUP, VERSION
from docrelay.pipedream import ConnectError, ConnectUnavailable, NotFound, RateLimited
from docrelay.pipedream.credentials import CredentialsError, credentials_from_secret
from docrelay.reconcile.connections import (
    Refusal,
    account_manifest,
    account_patch,
    check_account,
    check_delivery,
    request_of,
)

log = logging.getLogger(__name__)


class Connections:
    """The connection webhook's I/O: the Integration, Pipedream's account, the
    ConnectedAccount."""

    def __init__(
        self,
        settings: GatewaySettings,
        kube: KubeApi,
        accounts: Accounts,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.kube, self.accounts, self.clock = settings, kube, accounts, clock

    async def deliver(
        self, namespace: str, integration: str, nonce: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        try:
            payload = json.loads(body)
        except ValueError:
            raise Refusal(400, "body is not JSON") from None
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}"
        found = await self.kube.get_json(f"{base}/integrations/{integration}")
        request = request_of(found)
        delivery = check_delivery(request, nonce, payload, self.clock())
        assert request is not None  # check_delivery refused otherwise
        if delivery.account_id is None:  # CONNECTION_ERROR: nothing to create
            log.warning(
                "Pipedream reported a failed connection for ConnectedAccount %s/%s",
                namespace,
                request.account,
            )
            await self.report_failure(found, request.account)
            return 200, {"outcome": "error-reported", "connectedAccount": request.account}
        path = f"{base}/connectedaccounts/{request.account}"
        existing = await self.kube.get_json(path)
        patch = None if existing is None else account_patch(request, delivery.account_id, existing)
        retrieved = await self.retrieve(namespace, request.environment, delivery.account_id)
        check_account(request, delivery.account_id, retrieved)
        if patch is None:
            body_ = account_manifest(request, delivery.account_id)
            if await self.kube.create_json(f"{base}/connectedaccounts", body_):
                outcome = "created"
            else:  # a second delivery at the same moment created it: it counts once
                raise Refusal(409, "this connection was reported already")
        else:
            if not await self.kube.patch_json(path, patch):
                raise Refusal(409, "the ConnectedAccount went away; connect again")
            outcome = "updated"
        log.info(
            "ConnectedAccount %s/%s %s from Pipedream's connection webhook (%s)",
            namespace,
            request.account,
            outcome,
            delivery.account_id,
        )
        return 201, {
            "outcome": outcome,
            "connectedAccount": request.account,
            "accountId": delivery.account_id,
        }

    async def report_failure(self, integration: dict[str, Any] | None, account: str) -> None:
        """A Warning Event on the Integration: the person saw Pipedream's error on its page,
        whoever runs the tenant sees it here (`kubectl describe`)."""
        if integration is None:
            return
        message = (
            f"Pipedream reported that connecting the account for ConnectedAccount {account} "
            "failed; nothing was created. Open a new link to try again (the console's Connect, "
            "or docrelay connect)."
        )
        try:
            await self.kube.post_event(integration, "ConnectionFailed", message, "docrelay-gateway")
        except ApiUnavailable as exc:
            log.info("ConnectionFailed Event for %s not written: %s", account, exc)

    async def retrieve(self, namespace: str, environment: str, account_id: str) -> dict[str, Any]:
        """The account as Pipedream answers it to the tenant's own credentials."""
        data = await self.kube.read_secret(namespace, self.settings.pipedream_secret)
        try:
            credentials = credentials_from_secret(
                data, self.settings.pipedream_secret, self.settings.pipedream_url
            )
        except CredentialsError:
            raise Refusal(
                503, "no usable Pipedream credentials configured for this tenant"
            ) from None
        client = self.accounts.clients.get(credentials, environment)
        try:
            return dict(await self.accounts._run(client.get_account, account_id))
        except NotFound:
            raise Refusal(403, "Pipedream knows no such account") from None
        except (ConnectUnavailable, RateLimited):
            raise Refusal(503, "Pipedream did not answer; retry later") from None
        except ConnectError:
            raise Refusal(502, "Pipedream failed") from None


__all__ = ["ApiUnavailable", "Connections", "Refusal"]
