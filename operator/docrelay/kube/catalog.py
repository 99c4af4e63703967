"""The connected accounts a prompt names, grounded in Pipedream's action catalog.

The names, apps and account ids come from the ConnectedAccounts (`kube.agent.account_refs`);
each app's actions and props are looked up with the tenant's Connect credentials (the
Secret the account checks read, docs/pipedream.md) by `docrelay.pipedream.catalog`. No
Secret, an unreadable one or an unreachable Pipedream: the accounts as before, no catalog.
Lookups are kept a few minutes per account and instructions, so the turns of one
conversation do not repeat them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

from docrelay.agent.prompts import AccountRef, CatalogAction
from docrelay.kube import ACCOUNTS, Kube, KubeError
from docrelay.kube.agent import account_refs
from docrelay.pipedream.catalog import ground_accounts
from docrelay.pipedream.credentials import ClientCache, CredentialsError, credentials_from_secret

log = logging.getLogger("docrelay.agent")

KEEP_SECONDS = 300.0
_lock = threading.Lock()
_clients: ClientCache | None = None
_kept: dict[str, tuple[float, tuple[CatalogAction, ...]]] = {}


def _client_cache() -> ClientCache:
    global _clients
    with _lock:
        if _clients is None:
            _clients = ClientCache(read_timeout=10.0)
        return _clients


def grounded_account_refs(
    kube: Kube,
    namespace: str,
    names: list[str],
    instructions: str,
    secret: str = "docrelay-pipedream",
    clock: Callable[[], float] = time.monotonic,
) -> list[AccountRef]:
    """`account_refs` with each account's app actions from Pipedream's catalog."""
    refs = account_refs(kube, namespace, names)
    if not any(ref.app and ref.account_id for ref in refs):
        return refs
    try:
        credentials = credentials_from_secret(kube.read_secret_data(namespace, secret), secret)
    except (CredentialsError, KubeError) as exc:
        log.info("agent: %s: no Pipedream catalog for the prompt: %s", namespace, exc)
        return refs
    grounded = []
    for ref in refs:
        if not (ref.app and ref.account_id):
            grounded.append(ref)
            continue
        try:
            spec = (kube.get(ACCOUNTS, namespace, ref.name) or {}).get("spec") or {}
        except KubeError:
            spec = {}
        environment = spec.get("environment") or credentials.environment
        key = hashlib.sha256(
            "\0".join(
                [credentials.fingerprint, environment, ref.app, ref.account_id, instructions]
            ).encode()
        ).hexdigest()
        with _lock:
            kept = _kept.get(key)
        if kept is not None and clock() - kept[0] < KEEP_SECONDS:
            grounded.append(ref.model_copy(update={"actions": kept[1]}))
            continue
        client = _client_cache().get(credentials, environment)
        external = spec.get("externalUserId")
        (found,) = ground_accounts(
            client, [ref], instructions, {ref.name: str(external)} if external else None
        )
        if found.actions:
            with _lock:
                _kept[key] = (clock(), found.actions)
        grounded.append(found)
    return grounded
