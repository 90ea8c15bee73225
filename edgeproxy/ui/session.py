"""The admin page's session cookie, CSRF tokens and cross-site checks (pure functions: no HTTP framework).

Sign-in exchanges a key for a signed cookie that names who signed in: "master" or the key's sha256 token, never
the key itself, so a copied cookie (or a page) never leaks a usable API key. The cookie is signed with itsdangerous
under a secret derived from the master key with HMAC, so every instance and worker behind one URL accepts the
same cookies without sharing any state, and rotating the master key ends every session. The signature carries a
timestamp, and sessions older than `SESSION_TTL_S` are refused whatever the browser kept.

CSRF: each session carries a random token that every form sends back in a hidden field (synchronizer token);
POSTs are also refused when the browser says they come from another site (Origin, Sec-Fetch-Site), which stops
forged form posts even from browsers that ignore SameSite.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

SESSION_COOKIE = "edgeproxy_session"
LOGIN_COOKIE = "edgeproxy_login"  # the sign-in form's CSRF nonce, before there is a session
SESSION_TTL_S = 8 * 3600  # a working day; the key is asked for again after that
LOGIN_TTL_S = 15 * 60  # how long a sign-in form stays valid
MASTER_SUBJECT = "master"
_SECRET_LABEL = b"edgeproxy admin ui session v1"  # versioned: changing it ends every session on purpose
# Values of Sec-Fetch-Site a form post from our own page can carry ("none": typed or bookmarked by the user).
_SAME_SITE_FETCH = frozenset({"same-origin", "none"})

Clock = Callable[[], float]


def derive_secret(master_key: str) -> bytes:
    """A signing secret only the master key's holders can compute, and which differs from the key itself."""
    return hmac.new(master_key.encode("utf-8"), _SECRET_LABEL, hashlib.sha256).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time comparison that is false for anything missing or empty."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


@dataclass(frozen=True, slots=True)
class Session:
    subject: str  # MASTER_SUBJECT or a key's sha256 token
    csrf: str

    @property
    def is_master(self) -> bool:
        return self.subject == MASTER_SUBJECT


def _signer_with(clock: Clock) -> type[TimestampSigner]:
    # itsdangerous reads time.time() inside the signer; a clock seam lets tests make an expired session.
    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return ClockSigner


class SessionCodec:
    """Signs and checks session cookies and sign-in nonces for one master key."""

    def __init__(self, master_key: str, clock: Clock = time.time) -> None:
        secret = derive_secret(master_key)
        kwargs = {"digest_method": hashlib.sha256}
        signer = _signer_with(clock)
        self._sessions = URLSafeTimedSerializer(secret, "edgeproxy.ui.session", signer=signer, signer_kwargs=kwargs)
        self._logins = URLSafeTimedSerializer(secret, "edgeproxy.ui.login", signer=signer, signer_kwargs=kwargs)

    def dump_session(self, session: Session) -> str:
        return self._sessions.dumps({"sub": session.subject, "csrf": session.csrf})

    def load_session(self, cookie: str | None) -> Session | None:
        """The session in a cookie; None when it is missing, tampered with, signed by another key or expired."""
        data = _load(self._sessions, cookie, SESSION_TTL_S)
        if not isinstance(data, dict):
            return None
        subject, csrf = data.get("sub"), data.get("csrf")
        if not isinstance(subject, str) or not isinstance(csrf, str) or not subject or not csrf:
            return None
        return Session(subject, csrf)

    def dump_login(self, nonce: str) -> str:
        return self._logins.dumps(nonce)

    def load_login(self, cookie: str | None) -> str | None:
        nonce = _load(self._logins, cookie, LOGIN_TTL_S)
        return nonce if isinstance(nonce, str) else None


def _load(serializer: URLSafeTimedSerializer, raw: str | None, max_age: int) -> object:
    if not raw:
        return None
    try:
        return serializer.loads(raw, max_age=max_age)
    except (BadSignature, ValueError, UnicodeError):  # SignatureExpired and BadPayload are BadSignatures
        return None


def cross_site_reason(origin: str | None, fetch_site: str | None, host: str) -> str | None:
    """Why a POST looks like it comes from another site, or None when it may be our own page.

    Browsers send Origin on every POST; it must name this host (any scheme: TLS may end at a reverse proxy in
    front of us). Sec-Fetch-Site is checked too when present. Scripts without either header (curl) pass; they
    still need the session cookie and its CSRF token, which a foreign page cannot read.
    """
    if fetch_site is not None and fetch_site.strip().lower() not in _SAME_SITE_FETCH:
        return f"Sec-Fetch-Site is {fetch_site!r}"
    if origin is None:
        return None
    if origin.strip().lower() == "null":  # sandboxed frames, data: URLs, some redirects
        return "Origin is null"
    netloc = urlsplit(origin.strip()).netloc.lower()
    if not netloc or netloc != host.strip().lower():
        return f"Origin {origin!r} is not this site"
    return None
