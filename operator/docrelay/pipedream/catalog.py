"""Looking up an account's actions in Pipedream's catalog, for the agent's prompt.

For each connected app: Connect's list of the app's actions (keys, names, descriptions), the
few most relevant to the instructions retrieved in full (their props), and the values of
their remote-options props loaded for the user's own account (configure-prop: a Slack
channel, a Xero organisation). Pure conversion and choice: `docrelay.agent.catalog`.

A failed lookup leaves the account without a catalog (logged, never raised): the agent then
writes as before, and the prompt says nothing it does not know.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from docrelay.agent.catalog import MAX_ACTIONS, MAX_DETAILED, choose_detailed, to_action
from docrelay.agent.prompts import AccountRef, CatalogAction
from docrelay.pipedream.client import ConnectClient
from docrelay.pipedream.errors import ConnectError

log = logging.getLogger("docrelay.pipedream")


def lookup_actions(
    client: ConnectClient,
    app: str,
    instructions: str,
    *,
    account_id: str | None = None,
    external_user_id: str | None = None,
    max_actions: int = MAX_ACTIONS,
    max_detailed: int = MAX_DETAILED,
) -> tuple[CatalogAction, ...]:
    """The app's actions for a prompt; raises ConnectError when the list fails."""
    components = client.list_actions(app)
    detailed = set(choose_detailed(components, instructions, max_detailed))
    shown = [c for c in components if c.get("key") in detailed]
    shown += [c for c in components if c.get("key") not in detailed][
        : max(0, max_actions - len(shown))
    ]
    actions = []
    for component in shown:
        key = str(component.get("key"))
        if key not in detailed:
            actions.append(to_action(component))
            continue
        try:
            full = client.get_action(key)
        except ConnectError as exc:
            log.warning("catalog: %s: %s", key, exc)
            actions.append(to_action(component))
            continue
        remote = _remote_options(client, full, app, account_id, external_user_id)
        actions.append(to_action(full, detailed=True, remote_options=remote))
    return tuple(actions)


def _remote_options(
    client: ConnectClient,
    component: Mapping[str, Any],
    app: str,
    account_id: str | None,
    external_user_id: str | None,
) -> dict[str, Sequence[Mapping[str, Any]]]:
    """The values of each remote-options prop, for this account; none without one."""
    if not account_id or not external_user_id:
        return {}
    found: dict[str, Sequence[Mapping[str, Any]]] = {}
    key = str(component.get("key"))
    for prop in component.get("configurable_props") or []:
        if not isinstance(prop, Mapping) or not prop.get("remoteOptions"):
            continue
        name = str(prop.get("name"))
        try:
            answer = client.configure_prop(key, name, external_user_id, account_id, app)
        except ConnectError as exc:
            log.warning("catalog: %s %s: %s", key, name, exc)
            continue
        if answer.get("errors"):
            continue  # Pipedream could not load them for this account: say nothing
        options = answer.get("options")
        if not options and answer.get("string_options"):
            options = [{"value": v} for v in answer["string_options"]]
        if options:
            found[name] = options
    return found


def ground_accounts(
    client: ConnectClient,
    accounts: Sequence[AccountRef],
    instructions: str,
    external_users: Mapping[str, str] | None = None,
) -> list[AccountRef]:
    """`accounts` with each app's catalog actions (`external_users`: ConnectedAccount name ->
    its external user id, for remote options). One lookup per app and account."""
    grounded = []
    for account in accounts:
        if not account.app:
            grounded.append(account)
            continue
        try:
            actions = lookup_actions(
                client,
                account.app,
                instructions,
                account_id=account.account_id,
                external_user_id=(external_users or {}).get(account.name),
            )
        except ConnectError as exc:
            log.warning("catalog: actions of %s: %s", account.app, exc)
            grounded.append(account)
            continue
        grounded.append(account.model_copy(update={"actions": actions}))
    return grounded
