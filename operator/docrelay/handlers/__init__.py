"""Thin kopf handlers, registered into an explicit registry at startup (no import-time
registration): parse, gather, decide (reconcile), act (kube), write status once."""

from __future__ import annotations

from typing import Any

import kopf

from docrelay.handlers.accounts import register as register_accounts
from docrelay.handlers.agent import register as register_agent
from docrelay.handlers.conversation import register as register_conversations
from docrelay.handlers.dependencies import (
    account_changed,
    appeared_or_went,
    integration_seen,
    secret_changed,
)
from docrelay.handlers.egress import sync_egress_policy
from docrelay.handlers.integration import reconcile_integration
from docrelay.handlers.keys import scopes
from docrelay.handlers.runs import register as register_runs
from docrelay.handlers.sealing import register_sealing
from docrelay.handlers.startup import configure_kopf, login
from docrelay.models.common import GROUP, VERSION
from docrelay.settings import OperatorSettings


def register(registry: kopf.OperatorRegistry, operator_settings: OperatorSettings) -> None:
    """Register every handler of the operator into `registry`."""

    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, operator_settings)

    def authenticate(**_: Any) -> kopf.ConnectionInfo:
        return login(operator_settings)

    kopf.on.startup(registry=registry)(configure)
    kopf.on.login(registry=registry)(authenticate)

    integrations = (GROUP, VERSION, "integrations")
    # No kopf.on.resume: a start resumes every Integration from the caches, writing only what
    # changed (handlers.resume, started with the runs machinery's caches).
    for decorator in (kopf.on.create, kopf.on.update):
        decorator(*integrations, registry=registry, id=f"reconcile-{decorator.__name__}")(
            reconcile_integration
        )
    kopf.on.event(GROUP, VERSION, "integrationsecrets", registry=registry)(secret_changed)
    # An Integration appearing or going (not kopf's listing at a start: each secret's own
    # listing event then checks that its integration exists).
    kopf.on.event(
        GROUP,
        VERSION,
        "integrations",
        registry=registry,
        id="secret-orphans",
        when=appeared_or_went,
    )(integration_seen)
    # spec.egress.cidrs as a NetworkPolicy (docs/egress.md): at creation, when spec.egress
    # changes, and at a start (handlers.resume).
    kopf.on.create(*integrations, registry=registry, id="egress-create")(sync_egress_policy)
    kopf.on.update(*integrations, registry=registry, id="egress-update", field="spec.egress")(
        sync_egress_policy
    )
    kopf.on.event(GROUP, VERSION, "connectedaccounts", registry=registry)(account_changed)
    register_sealing(registry, operator_settings)
    register_runs(registry, lambda: scopes(operator_settings)[0])
    register_agent(
        registry,
        lambda: scopes(operator_settings)[0],
        lambda: scopes(operator_settings)[1],
    )
    register_conversations(registry, lambda: scopes(operator_settings)[0])
    register_accounts(registry, operator_settings, lambda: scopes(operator_settings)[0])
