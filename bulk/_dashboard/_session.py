"""The dashboard's session cookie and CSRF tokens.

A session is a signed cookie (itsdangerous, HMAC-SHA256, with its time of issue)
holding a random nonce and, once signed in, the row id of the API key the person
signed in with: never the key itself. Every request checks that key is still
active (deactivating it ends its sessions). The cookie is ``HttpOnly`` (no script
reads it), ``SameSite=Strict`` (no other site's page sends it) and ``Secure`` when
the request came over https.

Every visitor gets a session, signed in or not, so that the sign-in and register
forms carry a CSRF token too. A form's token is an HMAC of the session's nonce
under the server secret: a page of another origin can neither read it nor make one.
Signing in or out starts a new nonce (a session fixed before sign-in is worth
nothing after it).

The signing key is a server secret kept in the ledger database (schema m008), so
sessions survive restarts and every process serving one database agrees on it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Final, final

import attrs
from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["COOKIE", "MAX_AGE", "SECRET_NAME", "Session", "SessionSigner"]

#: The cookie's name.
COOKIE: Final = "bulk_session"
#: Seconds a session lasts after sign-in (the cookie's Max-Age and the signature's).
MAX_AGE: Final = 12 * 3600
#: The name of the signing key in the ledger's ``server_secrets``.
SECRET_NAME: Final = "dashboard_session"
_SALT: Final = "bulk.dashboard.session"


@attrs.frozen(kw_only=True)
class Session:
    """What a session cookie holds.

    Args:
        nonce: Random, per session: the CSRF token is derived from it.
        key_id: The API key (row id) the session signed in with; None: signed out.
        fresh: Made in this request (the cookie must be set on the response).
    """

    nonce: str
    key_id: int | None = None
    fresh: bool = False

    @classmethod
    def new(cls, key_id: int | None = None) -> Session:
        return cls(nonce=secrets.token_urlsafe(24), key_id=key_id, fresh=True)


@final
class SessionSigner:
    """Signs and checks session cookies and CSRF tokens with one server secret.

    Args:
        secret: The server secret (``Ledger.server_secret(SECRET_NAME)``).
    """

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self._csrf_key = hashlib.sha256(b"bulk.dashboard.csrf\0" + secret.encode()).digest()

    def dumps(self, session: Session) -> str:
        """The cookie value of ``session``."""
        payload: dict[str, Any] = {"n": session.nonce}
        if session.key_id is not None:
            payload["k"] = session.key_id
        return str(self._serializer.dumps(payload))

    def loads(self, value: str | None) -> Session | None:
        """The session a cookie value holds, or None (absent, forged, expired, malformed)."""
        if not value or len(value) > 512:
            return None
        try:
            payload = self._serializer.loads(value, max_age=MAX_AGE)
        except BadSignature:  # SignatureExpired is one
            return None
        if not isinstance(payload, dict):
            return None
        nonce, key_id = payload.get("n"), payload.get("k")
        if not isinstance(nonce, str) or not nonce:
            return None
        if key_id is not None and (isinstance(key_id, bool) or not isinstance(key_id, int)):
            return None
        return Session(nonce=nonce, key_id=key_id)

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries."""
        return hmac.new(self._csrf_key, session.nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token (constant time)."""
        return token is not None and hmac.compare_digest(
            self.csrf_token(session).encode(), token.encode("utf-8", "replace")
        )
