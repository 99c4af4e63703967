"""Secrets as a person sees them: the checks on a new secret's names, and the history
(names, states, fingerprints, dates: never a value, never ciphertext)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from docrelay.actions import Refused
from docrelay.models.secret import IntegrationSecretSpec
from docrelay.reconcile.secrets import order_key, secret_info

EXIT_USAGE = 2


def check_names(integration: str, key: str) -> None:
    """Refuse a bad integration or key name before the value is asked for."""
    try:
        IntegrationSecretSpec(
            integration=integration, key=key, encrypted_value="AA==", key_id="check"
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise Refused(f"invalid secret: {problems}", EXIT_USAGE) from None


def history_rows(objects: list[dict[str, Any]]) -> list[list[str]]:
    """One row per secret, each key's newest (Active) first, in the operator's order; only
    names, states, fingerprints and dates: never a value, never ciphertext."""
    newest_first = sorted((secret_info(o) for o in objects), key=order_key, reverse=True)
    infos = sorted(newest_first, key=lambda s: (s.integration, s.key))  # stable: keeps order
    rows = []
    for info in infos:
        status = info.status
        sealed = status.sealed_at or info.sealed_at
        rows.append(
            [
                info.integration,
                info.key,
                info.name,
                status.state.value if status.state else "",
                status.fingerprint or "",
                _stamp(sealed),
                _stamp(info.created),
            ]
        )
    return rows


def _stamp(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
