"""``pool service``: a systemd unit that runs ``pool serve`` at boot (or at login).

The unit runs the manager of one spool in the foreground, as ``pool serve`` is made to
run: logs to the journal (stderr), a clean stop on SIGTERM. ``KillMode=mixed`` sends that
SIGTERM to the manager alone, which stops its workers and jobs itself (requeueing what
its grace does not let finish); systemd's default would signal every job at once. Its
stop timeout leaves room for the grace, then systemd kills what is left.
"""

from __future__ import annotations

import getpass
import os
import re
from pathlib import Path
from typing import Any

import click

from pool.client import Spool
from pool.importpath import pool_command
from pool.stopping import SIGNAL_FOR, StopMode

UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]{1,200}")
STOP_SLACK = 30  # seconds beyond the grace for systemd to wait before SIGKILL


# How a value is written into a unit so that systemd reads it back as it was
# (systemd.syntax(7), systemd.unit(5), systemd.service(5)): % starts a specifier in every
# setting pool writes, so it is %% everywhere; $ starts a variable in ExecStart= only;
# ExecStart= and Environment= split words on blanks and unquote "..." with C escapes; a
# path (WorkingDirectory=) is taken whole and unquoted. A line break cannot be written.


def writable(text: str, what: str, quoted: bool = False) -> str:
    """``text``, with % escaped; UsageError if a unit cannot hold it: a line break, and,
    unquoted, blanks at either end (systemd strips them) or a backslash at the end (it
    joins the next line)."""
    if any(c in text for c in "\n\r\0") or (not quoted and (text != text.strip() or text.endswith("\\"))):
        raise click.UsageError(f"{what} {text!r} cannot be written into a systemd unit (a line break, blanks at "
                               "an end, or a backslash at the end); run `pool service` with another")
    return text.replace("%", "%%")


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_quote(word: str) -> str:
    """One word of an ``ExecStart=`` line: systemd expands % and $ and splits on blanks."""
    word = writable(word, "the word", quoted=True).replace("$", "$$")
    return word if word and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word) else quoted(word)


def environment_assignment(name: str, value: str) -> str:
    """One ``Environment=`` assignment, quoted: words are split and unquoted as in
    ExecStart=, but no $ is expanded."""
    return quoted(writable(f"{name}={value}", "the environment", quoted=True))


def stop_timeout(serve_params: dict[str, Any], on_stop: StopMode) -> str:
    """Seconds systemd waits for a clean stop: the manager's --grace and --kill-grace when
    it interrupts jobs; none when it drains (jobs end as they will)."""
    if on_stop is StopMode.DRAIN:
        return "infinity"
    if on_stop is StopMode.DETACH:
        return str(STOP_SLACK)
    return str(int(serve_params["grace"] + serve_params["kill_grace"]) + STOP_SLACK)


ON_STOP = {
    StopMode.DETACH: "running jobs run on; the manager that starts next takes them over",
    StopMode.DRAIN: "nothing new starts; the manager stops once running jobs have ended",
    StopMode.INTERRUPT: "running jobs get --grace, then are stopped and queued again",
}


def unit_text(spool: Spool, serve_args: tuple[str, ...], serve_params: dict[str, Any], system: bool,
              on_stop: StopMode = StopMode.DETACH) -> str:
    command = pool_command("--spool", str(spool.path), "serve", *serve_args)
    user = "" if not system or os.geteuid() == 0 else f"User={getpass.getuser()}\n"
    return (
        "[Unit]\n"
        f"Description={writable(f'pool: background jobs of {spool.path}', 'the spool')}\n"
        "After=local-fs.target network.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        f"{user}"
        f"WorkingDirectory={writable(os.getcwd(), 'the working directory')}\n"
        # Jobs dropped by hand run with the manager's environment: the PATH they were
        # written for (submitted ones carry their submitter's).
        f"Environment={environment_assignment('PATH', os.environ.get('PATH', '/usr/bin:/bin'))}\n"
        f"ExecStart={' '.join(map(systemd_quote, command))}\n"
        f"# On stop and restart ({on_stop.value}): {ON_STOP[on_stop]}.\n"
        f"KillSignal={SIGNAL_FOR[on_stop].name}\n"
        # The manager alone is signalled; detached, its jobs are left in the unit's group.
        f"KillMode={'process' if on_stop is StopMode.DETACH else 'mixed'}\n"
        f"TimeoutStopSec={stop_timeout(serve_params, on_stop)}\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "\n"
        "[Install]\n"
        f"WantedBy={'multi-user.target' if system else 'default.target'}\n"
    )


def unit_folder(system: bool) -> Path:
    if system:
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--system", is_flag=True, help="A system unit (/etc/systemd/system; starts at boot) "
              "instead of a user unit (~/.config/systemd/user; starts at login, or at boot with lingering).")
@click.option("--install", is_flag=True, help="Write the unit into place instead of printing it.")
@click.option("--name", default="pool", show_default=True, help="The unit's name (NAME.service).")
@click.option("--on-stop", type=click.Choice([m.value for m in StopMode]), default=StopMode.DETACH.value,
              show_default=True, help="What `systemctl stop` and `restart` do to running jobs: leave them running "
              "for the next manager (detach), wait for them (drain), or stop them after --grace (interrupt).")
@click.argument("serve_args", nargs=-1, type=click.UNPROCESSED, metavar="[SERVE OPTIONS]...")
@click.pass_context
def service(ctx: click.Context, system: bool, install: bool, name: str, on_stop: str,
            serve_args: tuple[str, ...]) -> None:
    """Print (or --install) a systemd unit that runs `pool serve` for this spool, with
    SERVE OPTIONS as given (`pool service --install --workers 4 --tasks mytasks`)."""
    from .serve import serve

    # A bad option is said now, not at boot; --spool among them is the spool served.
    try:
        serving = serve.make_context("serve", list(serve_args), parent=ctx)
    except click.UsageError as exc:
        raise click.UsageError(f"pool serve: {exc.format_message()}", ctx) from None
    if not UNIT_NAME.fullmatch(name):
        raise click.BadParameter("letters, digits and : _ . - only", param_hint="--name")
    text = unit_text(serving.obj, serve_args, serving.params, system, StopMode(on_stop))
    if not install:
        click.echo(text, nl=False)
        return
    folder = unit_folder(system)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.service"
    path.write_text(text)
    scope = "" if system else " --user"
    click.echo(f"wrote {path}; now run:\n"
               f"  systemctl{scope} daemon-reload\n"
               f"  systemctl{scope} enable --now {name}\n"
               + ("" if system else f"  loginctl enable-linger {getpass.getuser()}   # to start at boot, "
                                    "not at login\n")
               + f"  journalctl{scope} -u {name} -f   # its log")
