"""Serving the annotation app with uvicorn: loopback by default; any other address needs
`allow_remote` (and belongs behind a TLS-terminating proxy: the app serves plain HTTP)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from harness.errors import HarnessError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(allow_remote: bool) -> list[str] | None:
    """Host headers the app answers: the loopback names when bound to loopback (a page on
    another site cannot reach it by DNS rebinding); any host when remote access is allowed
    (the proxy in front decides)."""
    if allow_remote:
        return None
    return ["127.0.0.1", "localhost", "[::1]", "::1"]


def serve(store: str | Path, *, host: str = "127.0.0.1", port: int = 8080, allow_remote: bool = False,
          secure_cookies: bool = False, log_level: str = "warning") -> None:
    """Run the app until interrupted."""
    if not is_loopback(host) and not allow_remote:
        raise HarnessError(f"--host {host} is not a loopback address: pass --allow-remote to serve other machines, "
                           "and put the app behind a TLS-terminating proxy (it serves plain HTTP)")
    import uvicorn

    from judges.human.app import create_app

    app = create_app(store, secure_cookies=secure_cookies, allowed_hosts=allowed_hosts(allow_remote))
    access = logging.getLogger("judges.human.access")
    if log_level in ("info", "debug") and not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
    # uvicorn's own access log prints full request lines (a sign-in link's token among them):
    # it stays off; the app logs redacted paths instead.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level=log_level, server_header=False)
