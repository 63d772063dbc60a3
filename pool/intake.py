"""Intake: turn files in ``incoming/`` into queued jobs, or into rejections with a reason.

    incoming/x.json --read (safe open)--> parse --ok--> rename to incoming/.claimed~<token>~x.json
                                            |           --> status/<id>.json (queued), one per job
                                            |           --> unlink the claimed file
                                            '--bad, and the file is complete--> rejected/x.json
                                                                                + x.json.error.json

A claimed file's generated ids derive from its token, so if the manager dies between the
claim and the last status write, the next one re-reads the claim and ends with the very
same jobs, none twice. A file that may still be being written (watchdog saw it change but
not close, or it changed less than ``settle`` seconds ago) is never rejected, only
retried later: a prefix of a JSON object is never valid JSON, but a prefix of a ``.jsonl``
is, so ``.jsonl`` files are only taken once complete.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .dropzone import DEFAULT_MAX_FILE_BYTES, is_job_name, shown
from .errors import InvalidJobSpec
from .model import JobSpec, JobStatus, new_status, parse_job_file, utc_now
from .spool import SpoolDir
from .watch import CHANGED, COMPLETE, GONE, WRITING

log = logging.getLogger(__name__)

# The dynamic loader's variables (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, macOS's DYLD_*).
LOADER_ENV_PREFIXES = ("LD_", "DYLD_")


@dataclass(frozen=True)
class IntakeRules:
    """What this manager accepts; a job it cannot run is refused at the door."""

    task_reason: Callable[[str], str | None]  # why a task cannot run here, or None
    allow_commands: bool = False
    allow_loader_env: bool = False
    group_gid: int | None = None
    settle: float = 1.0
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


class Intake:
    """Takes files in; each accepted job is handed to ``accept(status, reason)`` as soon
    as its status is written, so a failure half way through a batch loses nothing."""

    def __init__(self, spool: SpoolDir, rules: IntakeRules, accept: Callable[[JobStatus, str], None]) -> None:
        self.spool = spool
        self.rules = rules
        self.accept = accept
        self.notes: deque[tuple[str, str]] = deque()  # filled by the watchdog thread
        self.seen: dict[str, str] = {}  # name -> WRITING | COMPLETE, from file events
        self.recheck_at: float | None = None  # wall-clock time to look at unsettled files again

    def due(self) -> bool:
        """True when a file event arrived, or a file waiting to settle may have."""
        return bool(self.notes) or (self.recheck_at is not None and time.time() >= self.recheck_at)

    def _absorb_notes(self) -> None:
        while self.notes:
            name, what = self.notes.popleft()
            if what == GONE:
                self.seen.pop(name, None)
            elif what != CHANGED:
                self.seen[name] = what

    def _settled(self, name: str, mtime: float, now: float) -> bool:
        state = self.seen.get(name)
        if state == COMPLETE:
            return True
        if state == WRITING or now - mtime < self.rules.settle:
            wake = max(mtime + self.rules.settle, now + 0.05)
            self.recheck_at = wake if self.recheck_at is None else min(self.recheck_at, wake)
            return False
        return True

    def scan(self) -> None:
        """Look at every file in incoming/ once (and finish any claim left half done)."""
        self._absorb_notes()
        self.recheck_at = None
        names, claims = self.spool.drop.listing()
        if claims:
            self.recover_claims(claims)
        now = time.time()
        for name in names:
            if not is_job_name(name):
                continue
            try:
                self._take(name, now)
            except FileNotFoundError:
                pass  # gone meanwhile (taken back by its writer): nothing to do
            except OSError as exc:
                log.error("incoming/%s: cannot take it now (%s); will try again", shown(name), exc)
                self.recheck_at = now + 1.0

    def _take(self, name: str, now: float) -> None:
        file = self.spool.drop.read(name, self.rules.max_file_bytes, self.rules.group_gid)
        if file.problem is not None:
            self._reject(name, f"{shown(name)} {file.problem}")
            return
        assert file.data is not None
        token = secrets.token_hex(6)
        try:
            specs = parse_job_file(file.data, shown(name), token)
            complete = name.endswith(".json") or self._settled(name, file.mtime, now)
            if complete:
                self._check_runnable(specs, name, token)
        except InvalidJobSpec as exc:
            if self._settled(name, file.mtime, now):
                self._reject(name, str(exc))
            return
        if not complete:
            return
        claimed = self.spool.drop.claim(name, token)
        self.seen.pop(name, None)
        self.finish_claim(claimed, specs, "accepted")

    def _check_runnable(self, specs: list[JobSpec], name: str, token: str) -> None:
        for spec in specs:
            generated = spec.id == token or spec.id.startswith(f"{token}-")  # new: cannot exist yet
            if spec.task is not None:
                reason = self.rules.task_reason(spec.task)
            elif not self.rules.allow_commands:
                reason = "command jobs are disabled; start the manager with --allow-commands"
            else:
                reason = self._env_reason(spec)
            if reason is None and not generated and self.spool.has_status(spec.id):
                reason = f"id {spec.id!r} already exists"
            if reason:
                raise InvalidJobSpec(f"job {spec.id!r} in {name}: {reason}")

    def _env_reason(self, spec: JobSpec) -> str | None:
        loader = sorted(k for k in spec.env if k.startswith(LOADER_ENV_PREFIXES))
        if loader and not self.rules.allow_loader_env:
            return (f"'env' sets {loader[0]}, which loads code into every program it starts; "
                    "start the manager with --allow-loader-env to allow it")
        return None

    def finish_claim(self, claimed: str, specs: list[JobSpec], reason: str, recovering: bool = False) -> None:
        """Give every job of a claimed file its queued status, then drop the claim."""
        created = utc_now()
        for spec in specs:
            if recovering and self.spool.has_status(spec.id):
                continue  # written before the interruption: the same job, not a duplicate
            status = new_status(spec, created)
            self.spool.write_status(status)
            self.accept(status, reason)
        self.spool.drop.release_claim(claimed)

    def recover_claims(self, claims: list[str] | None = None) -> None:
        """Finish claims left half done (by a dead manager, or a full disk)."""
        for claimed in self.spool.drop.claimed_names() if claims is None else claims:
            token, _, name = claimed.partition("~")
            try:
                specs = parse_job_file(self.spool.drop.read_claimed(claimed), shown(name), token)
            except InvalidJobSpec as exc:
                self.spool.drop.reject(claimed, str(exc), from_claimed=True)
                continue
            self.finish_claim(claimed, specs, "accepted (claim finished after an interruption)", recovering=True)

    def _reject(self, name: str, reason: str) -> None:
        log.warning("rejected incoming/%s: %s", shown(name), reason)
        self.spool.drop.reject(name, reason)
        self.seen.pop(name, None)
