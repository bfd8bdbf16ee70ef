"""Secrets of the annotation app: one-time invite tokens, session ids and CSRF tokens.

- Invite tokens and session ids are random (secrets.token_urlsafe) and stored only as
  sha256 digests: a copy of the database signs no one in.
- The session cookie is signed (itsdangerous, through Starlette's SessionMiddleware) with a
  key kept in the database (human_info.session_key), so a restarted server keeps its sessions;
  HARNESS_ANNOTATE_SECRET overrides it.
- The CSRF token is a per-session random value kept in the signed cookie and repeated in a
  hidden field of every form; a POST whose field does not match is refused.
None of these values is ever logged (see app.py's access log, which redacts sign-in paths).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32
INVITE_DAYS = 14
SESSION_HOURS = 12
SECRET_ENV = "HARNESS_ANNOTATE_SECRET"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
