"""Who may use the dashboard: the holder of its token, as Jupyter does it.

Loopback is not a boundary on a shared machine (every local user can reach 127.0.0.1),
and the dashboard runs as the spool's owner, reading what the spool's mode may keep from
others: so every page and every call needs the token, not only actions. It is printed
at start in the address to open; the browser trades it for a cookie (HttpOnly,
SameSite=Strict) and a program sends ``Authorization: Bearer <token>`` (Prometheus'
``authorization`` setting). State changes are POST only, and refused when their Origin
(or, lacking one, Referer) is not the dashboard's own, so a page of another site the
user has open cannot fire one with the user's cookie.

The token is kept in ``<spool>/web.token``, mode 0600: the spool's owner alone may read
it (a member of a shared spool's group may not), and a restart keeps bookmarks working.
One that is not a regular file of ours with that mode is never read, and replaced.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from urllib.parse import urlsplit

from pool.safeio import Owners, UnsafeFile
from pool.spool import SpoolDir

TOKEN_FILE = "web.token"
COOKIE = "pool_token"
TOKEN_BYTES = 32
MAX_TOKEN = 256


def spool_token(spool: SpoolDir) -> str:
    """The token kept in the spool; made (and kept) when there is none fit to use."""
    try:
        fd, st = spool.top.open_checked(TOKEN_FILE, Owners(os.geteuid()), MAX_TOKEN)
        try:
            kept = os.read(fd, MAX_TOKEN).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        if stat.S_IMODE(st.st_mode) == 0o600 and len(kept) >= 32 and kept.isascii() and kept.isprintable():
            return kept
    except (FileNotFoundError, UnsafeFile):
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    spool.top.write_atomic(TOKEN_FILE, token.encode() + b"\n", 0o600)
    return token


def token_matches(given: str | None, token: str | None) -> bool:
    """``given`` is the token (compared in constant time); anything goes with none set."""
    if token is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """The request comes from a page of this dashboard: its Origin (or Referer) names the
    host it was sent to. A request with neither (curl, a script) is no browser's: it
    carries the token itself, which no other site's page can read."""
    source = origin or referer
    if source is None:
        return True
    if source == "null" or host is None:
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc == host


def is_loopback(host: str) -> bool:
    """The address is this machine's alone (an IPv4 127/8, ::1, or localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
