"""Deterministic names: the same event always names the same run.

Shared by the gateway (which creates runs) and the operator (which names their Jobs); a
redelivered webhook computes the same run name, so creating it again is a no-op (409).
"""

from __future__ import annotations

import hashlib

from docrelay.models.common import RUN_NAME_MAX

_DIGEST_CHARS = 15  # 60 bits: collisions among one integration's runs are not a concern


def _digest(*parts: str) -> str:
    # NUL never occurs in these identifiers, so the joined text is unambiguous.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def idempotency_key(
    namespace: str, integration: str, event_id: str, document: str, trigger: str
) -> str:
    """The key the code receives: the same on every attempt and every redelivery."""
    return "idem-" + _digest("idempotency/v1", namespace, integration, event_id, document,
                             trigger)[:48]


def run_name(integration: str, event_id: str, document: str, trigger: str) -> str:
    """``<integration>-<digest>``: at most 56 characters for Integration names up to 40."""
    digest = _digest("run/v1", integration, event_id, document, trigger)[:_DIGEST_CHARS]
    name = f"{integration}-{digest}"
    if len(name) > RUN_NAME_MAX:  # pragma: no cover - the Integration name bound prevents it
        raise ValueError(f"integration name {integration!r} is too long to name its runs")
    return name


def job_name(run: str, attempt: int) -> str:
    """One Job per attempt, named so a restarted operator finds the one it made."""
    return f"{run}-{attempt}"
