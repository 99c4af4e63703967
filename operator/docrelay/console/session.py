"""Console sessions: who signed in, with which credentials, and the CSRF token of each.

A session is a random id in an HttpOnly, SameSite=Strict cookie (Secure under TLS); it names
server-side state only, so a forged or guessed cookie names nothing and gets nothing. Every
write carries the session's CSRF token (a form field or the X-CSRF-Token header), compared
in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

COOKIE = "docrelay_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_SESSIONS = 1000
IDLE_SECONDS = 8 * 3600  # a session unused this long is gone: sign in again

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class Session:
    id: str
    csrf: str
    kube: Any  # a docrelay.kube.Kube acting with this user's credentials
    user: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)


class Sessions:
    """Sessions by id, in memory (a restart signs everyone out)."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, kube: Any, user: str = "") -> Session:
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), kube, user)
        with self._lock:
            if len(self._by_id) >= MAX_SESSIONS:
                self._by_id.pop(next(iter(self._by_id)))
            self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._by_id.get(session_id)
            if session is None:
                return None
            if now - session.last_used > self.idle_seconds:
                del self._by_id[session_id]  # its credentials go with it
                return None
            session.last_used = now
            return session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._by_id.pop(session_id or "", None)


def csrf_ok(session: Session, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(session.csrf.encode(), str(offered).encode())


def cookie_attributes(secure: bool) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": secure, "path": "/"}
