"""What a person does through the Kubernetes API with their own credentials, with the guard
rails every front end shares: the CLI (`docrelay.cli`) and the web console
(`docrelay.console`) both call these, so a deploy, a replay, a test run, a secret's checks or
a conversation's turn behave the same wherever they are asked for.

Each function takes the caller's `Kube` (their credentials: RBAC decides) and raises
`Refused` with a message for the person when a guard rail says no.
"""

from __future__ import annotations

from typing import Any

from docrelay.kube import INTEGRATIONS, Kube

EXIT_REFUSED = 1


class Refused(Exception):
    """A request a guard rail refused. The message is for the person (never a secret);
    `exit_code` is what the CLI exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def get_integration(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    integration = kube.get(INTEGRATIONS, namespace, name)
    if integration is None:
        raise Refused(f"integration {name} not found in namespace {namespace}")
    return integration
