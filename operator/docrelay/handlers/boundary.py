"""The error boundary of every handler: only messages we wrote leave it.

kopf's own event posting is switched off (see startup), so kopf never posts exception text.
Here every exception becomes a kopf.TemporaryError or kopf.PermanentError with a message we
wrote, and the same message is posted as a Warning Event. Unexpected exceptions are logged
with their traceback to the operator's own log only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import kopf

from docrelay.kube import Kube, KubeError, ObjectRef

log = logging.getLogger("docrelay.operator")

RETRY_AFTER_API_ERROR = 10
RETRY_AFTER_UNEXPECTED = 30


class DomainError(Exception):
    """A problem a user can act on; the message is ours and safe to show."""

    def __init__(self, message: str, *, permanent: bool = False, reason: str = "Failed") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.reason = reason


def post_event(kube: Kube, about: ObjectRef, event_type: str, reason: str, message: str) -> None:
    """Best effort: a failed Event post is logged, never fails the handler."""
    try:
        kube.post_event(about, event_type, reason, message)
    except KubeError as exc:
        log.warning("could not post event %s on %s: %s", reason, about.name, exc)


@contextmanager
def boundary(kube: Kube, about: ObjectRef, what: str) -> Iterator[None]:
    """Map every exception raised inside to a kopf error with a message we wrote."""
    try:
        yield
    except (kopf.TemporaryError, kopf.PermanentError):
        raise  # raised by our code, with our messages
    except DomainError as exc:
        post_event(kube, about, "Warning", exc.reason, str(exc))
        if exc.permanent:
            raise kopf.PermanentError(str(exc)) from None
        raise kopf.TemporaryError(str(exc), delay=RETRY_AFTER_API_ERROR) from None
    except KubeError as exc:
        message = f"{what} failed, will retry: {exc}"
        post_event(kube, about, "Warning", "ReconcileFailed", message)
        raise kopf.TemporaryError(message, delay=RETRY_AFTER_API_ERROR) from None
    except Exception:
        log.exception("unexpected error while %s %s/%s", what, about.namespace, about.name)
        message = f"{what} failed unexpectedly, will retry; the operator's log has details"
        post_event(kube, about, "Warning", "ReconcileFailed", message)
        raise kopf.TemporaryError(message, delay=RETRY_AFTER_UNEXPECTED) from None
