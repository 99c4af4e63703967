"""Console sessions: who signed in, with which credentials, and the CSRF token of each.

A session lives in its cookie, sealed (AES-256-GCM) with the console's session key: the
user, the session's CSRF token, when it was issued and last used, and in token mode the
user's bearer token. No replica keeps anything a session needs, so any replica with the same
key (the chart's Secret) serves any session, and a restart signs nobody out. A forged,
altered or stale cookie opens to nothing and gets nothing; a session unused for 8 hours, or
older than 12, is gone. The cookie is HttpOnly, SameSite=Strict, Secure under TLS. Every
write carries the session's CSRF token (a form field or the X-CSRF-Token header), compared in
constant time; signing in carries a token tied to a sign-in cookie (login CSRF), and failed
sign-ins are limited per client address.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

COOKIE = "docrelay_session"
LOGIN_COOKIE = "docrelay_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
IDLE_SECONDS = 8 * 3600  # a session unused this long is gone: sign in again
MAX_AGE_SECONDS = 12 * 3600  # and none lives longer than this, used or not
REFRESH_SECONDS = 60  # how stale "last used" may be before the cookie is issued again
MAX_TOKEN_BYTES = 2048  # a longer bearer token would not fit a cookie (4 KiB) once sealed
MIN_KEY_BYTES = 32
SIGN_IN_FAILURES = 10  # failed sign-ins per client address and window, then 429
SIGN_IN_WINDOW_SECONDS = 300
_VERSION = 1

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


class SessionKeyError(ValueError):
    """The session key file is missing, unreadable or too short (never shows the key)."""


def session_key(material: bytes) -> bytes:
    """The 32-byte AES key derived from key material (a Secret's random string)."""
    material = material.strip()
    if len(material) < MIN_KEY_BYTES:
        raise SessionKeyError(f"the session key needs at least {MIN_KEY_BYTES} bytes")
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"docrelay console session"
    ).derive(material)


def read_session_key(path: str) -> bytes:
    try:
        material = Path(path).read_bytes()
    except OSError as exc:
        raise SessionKeyError(f"cannot read the session key file {path}: {exc.strerror}") from None
    return session_key(material)


def random_session_key() -> bytes:
    """One process's key: its sessions end with it (`docrelay console` on a laptop)."""
    return session_key(secrets.token_bytes(32).hex().encode())


@dataclass
class Session:
    id: str
    csrf: str
    kube: Any  # a docrelay.kube.Kube acting with this user's credentials
    user: str = ""
    token: str = field(default="", repr=False)  # token mode: the user's bearer token
    issued: float = 0.0
    seen: float = 0.0
    flash: str | None = None
    changed: bool = False  # the cookie must be issued again

    def set_flash(self, message: str) -> None:
        self.flash = message
        self.changed = True

    def pop_flash(self) -> str | None:
        flash, self.flash = self.flash, None
        if flash is not None:
            self.changed = True
        return flash


class SessionCookies:
    """Seals a session into its cookie and opens it again. `clock` is wall time (seconds):
    cookies move between processes."""

    def __init__(
        self,
        key: bytes,
        context: str,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._aead = AESGCM(key)
        self._login_key = hmac.new(key, b"login", hashlib.sha256).digest()
        self._context = f"docrelay-console-session|{context}".encode()
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.clock = clock

    def new(self, kube: Any, user: str, token: str = "") -> Session:
        now = self.clock()
        return Session(
            secrets.token_urlsafe(16),
            secrets.token_urlsafe(32),
            kube,
            user,
            token=token,
            issued=now,
            seen=now,
            changed=True,
        )

    def seal(self, session: Session) -> str:
        state: dict[str, Any] = {
            "v": _VERSION,
            "id": session.id,
            "csrf": session.csrf,
            "user": session.user,
            "iat": int(session.issued),
            "seen": int(session.seen),
        }
        if session.token:
            state["token"] = session.token
        if session.flash:
            state["flash"] = session.flash[:300]
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json.dumps(state).encode(), self._context)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, cookie: str | None) -> dict[str, Any] | None:
        """The session's state, or None: no cookie, forged, altered, sealed with another key
        or for another console, idle too long or too old."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            state = json.loads(self._aead.decrypt(raw[:12], raw[12:], self._context))
        except (binascii.Error, ValueError, InvalidTag):
            return None
        if not isinstance(state, dict) or state.get("v") != _VERSION:
            return None
        now = self.clock()
        if now - state["seen"] > self.idle_seconds or now - state["iat"] > self.max_age_seconds:
            return None
        return state

    def seal_data(self, purpose: str, data: dict[str, Any]) -> str:
        """Sealed data for a round trip through someone else's site (a redirect's query):
        opens only here, for this purpose."""
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(
            nonce, json.dumps({**data, "at": int(self.clock())}).encode(), self._purpose(purpose)
        )
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open_data(self, purpose: str, sealed: str | None, max_age: float) -> dict[str, Any] | None:
        if not sealed or len(sealed) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            data = json.loads(self._aead.decrypt(raw[:12], raw[12:], self._purpose(purpose)))
        except (binascii.Error, ValueError, InvalidTag):
            return None
        if not isinstance(data, dict) or self.clock() - data.get("at", 0) > max_age:
            return None
        return data

    def _purpose(self, purpose: str) -> bytes:
        return self._context + b"|" + purpose.encode()

    def stale(self, session: Session) -> bool:
        return session.changed or self.clock() - session.seen >= REFRESH_SECONDS

    # Login CSRF: the sign-in form carries a token tied to a random sign-in cookie; a page of
    # another site can neither read the token nor send the (SameSite=Strict) cookie.
    def login_token(self, nonce: str) -> str:
        return hmac.new(self._login_key, nonce.encode(), hashlib.sha256).hexdigest()

    def login_ok(self, nonce: str | None, offered: str | None) -> bool:
        if not nonce or not offered:
            return False
        return hmac.compare_digest(self.login_token(nonce).encode(), str(offered).encode())


class SignInLimit:
    """Failed sign-ins per client address: after `failures` within `window` seconds, every
    sign-in from there is refused (even a right one) until the oldest failure ages out. Per
    process: with R replicas an address gets R times the budget."""

    def __init__(
        self,
        failures: int = SIGN_IN_FAILURES,
        window: float = SIGN_IN_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 10_000,
    ) -> None:
        self.failures = failures
        self.window = window
        self.clock = clock
        self.max_addresses = max_addresses
        self._by_address: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int:
        """0 if `address` may try to sign in now, else the seconds to wait."""
        now = self.clock()
        with self._lock:
            failed = self._by_address.get(address)
            if failed is None:
                return 0
            while failed and now - failed[0] >= self.window:
                failed.popleft()
            if not failed:
                del self._by_address[address]
                return 0
            if len(failed) < self.failures:
                return 0
            return max(1, int(self.window - (now - failed[0])) + 1)

    def failed(self, address: str) -> None:
        with self._lock:
            failed = self._by_address.setdefault(address, deque())
            self._by_address.move_to_end(address)
            failed.append(self.clock())
            while len(failed) > self.failures:
                failed.popleft()
            while len(self._by_address) > self.max_addresses:
                self._by_address.popitem(last=False)


class TokenClients:
    """Token mode: one API client per bearer token, reused across requests (a cache: the
    token itself travels in the session's cookie). Bounded; the least recently used goes."""

    def __init__(self, make: Callable[[str], Any], size: int = 256) -> None:
        self._make = make
        self._size = size
        self._by_digest: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str) -> Any:
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            kube = self._by_digest.get(digest)
            if kube is not None:
                self._by_digest.move_to_end(digest)
                return kube
        kube = self._make(token)
        with self._lock:
            self._by_digest[digest] = kube
            while len(self._by_digest) > self._size:
                self._by_digest.popitem(last=False)
        return kube


def csrf_ok(session: Session, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(session.csrf.encode(), str(offered).encode())


def cookie_attributes(secure: bool) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": secure, "path": "/"}
