"""``pool web``: the dashboard of a spool in the browser (the ``web`` extra: Starlette,
uvicorn, Jinja2). Imported only when it runs: the core install has none of them."""

from __future__ import annotations

import socket
import sys
import webbrowser

import click

from pool.client import Spool
from pool.errors import PoolError

from .commands import StrictCommand

EXTRA_MISSING = "pool web needs the web extra: pip install 'spoolpool[web]'"


@click.command(cls=StrictCommand)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on; another than loopback needs the token (the default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="The port (0: any free one; the address printed says which).")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in the browser.")
@click.option("--read-only", is_flag=True, help="Show jobs; offer no action (kill, retry, pause, resume).")
@click.option("--no-token", is_flag=True,
              help="Let anyone who reaches the address in (loopback only: every local user can).")
@click.pass_obj
def web(spool: Spool, host: str, port: int, open_browser: bool, read_only: bool, no_token: bool) -> None:
    """Serve a dashboard of the spool: jobs with live progress, logs, actions.

    Every page needs the token printed in the address (kept 0600 in the spool), as
    Jupyter does; a program sends it as `Authorization: Bearer TOKEN`."""
    try:
        import uvicorn

        from pool.web import access
        from pool.web.app import make_app
    except ImportError:
        raise PoolError(EXTRA_MISSING) from None
    if no_token and not access.is_loopback(host):
        raise click.UsageError(f"--no-token on {host}, not a loopback address: anyone who reaches it could kill "
                               "jobs; keep the token, or listen on 127.0.0.1")
    token = None if no_token else access.spool_token(spool.dir)
    try:
        listening = socket.create_server((host.strip("[]"), port),
                                         family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise PoolError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    bound = listening.getsockname()[1]
    shown_host = f"[{host.strip('[]')}]" if ":" in host else host
    url = f"http://{shown_host}:{bound}/" + (f"?token={token}" if token else "")
    click.echo(f"pool web: the dashboard of {spool.path} at {url}")
    sys.stdout.flush()
    if open_browser:
        webbrowser.open(url)
    config = uvicorn.Config(make_app(spool, token, read_only), log_level="warning", lifespan="off",
                            access_log=False)
    uvicorn.Server(config).run(sockets=[listening])
