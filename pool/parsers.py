"""Reading progress from a program's output, as it is printed. Pure: bytes in, numbers out.

``auto`` understands, strongest first:

    {"progress": 0.37, "message": "..."}        JSON lines (also {"percent": 37},
                                                {"done": 12, "total": 50})
     45%|████▌     | 45/100 [00:04<00:05]       tqdm bars (also redrawn in place with \\r)
    Duration: 00:01:00.00 ... time=00:00:15.00  ffmpeg (the input's duration, then time=)
      % Total    % Received % Xferd ...          curl's meter (its first column is the %)
    37%   37.5 %                                a percentage
    [12/50]  step 12/50  12 of 50               a count, where it clearly marks progress

Once a stronger form has been seen, weaker ones are ignored: a line saying ``100% of disk
used`` does not move a job that reports through a tqdm bar. Only the newest lines of each
chunk are examined, so a command that prints megabytes a second is not slowed down.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

MAX_LINE = 64 * 1024  # a "line" longer than this is cut: no newline must not mean no memory
LINES_EXAMINED = 64  # per chunk, newest first: the latest progress wins anyway
TAIL_BYTES = 16 * 1024  # ... found in the chunk's last bytes
_LINE_END = re.compile(rb"[\r\n]")
MESSAGE_LIMIT = 200

JSON, TQDM, FFMPEG, CURL, PERCENT, COUNT, REGEX = 7, 6, 5, 4, 3, 2, 1

_TQDM = re.compile(r"(\d{1,3}(?:\.\d+)?)%\|.*?\|\s*(\d+(?:\.\d+)?)([kMGTPEZY]?)/(\d+(?:\.\d+)?)([kMGTPEZY]?)")
_TQDM_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)%\|")
_PERCENT = re.compile(r"(?<![\w.%])(\d{1,3}(?:\.\d+)?)\s?%(?![\w|])")
_COUNT = re.compile(
    r"(?:^|[\[(]|\b(?:step|item|items|file|files|frame|task|epoch|batch|chunk|part|page|record|row|job|"
    r"test|image|sample|iteration|iter|round|object|obj)s?:?\s*)"
    r"(\d+)\s*(?:/|\bof\b)\s*(\d+)(?:[\])]|\s|$|:|,)", re.IGNORECASE)
_SIZE_COUNT = re.compile(r"(?<![\d./])(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)\s*(?:[kKMGT]i?B|bytes|B)\b")
_DATE_LIKE = re.compile(r"\d+/\d+/\d+")
_FFMPEG_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_FFMPEG_TIME = re.compile(r"\btime=\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_CURL_HEADER = b"% Total    % Received"
_CURL_ROW = re.compile(r"^\s*(\d{1,3})\s+\d")
_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "Z": 1e21, "Y": 1e24}


@dataclass(frozen=True, slots=True)
class Reading:
    """What one line says: a fraction (or None) from a form of some strength, and
    whether the line is one a human would read as a message."""

    fraction: float | None
    strength: int
    message: str | None


def _fraction(done: float, total: float) -> float | None:
    if total <= 0 or done < 0 or done > total:
        return None
    return done / total


def _seconds(match: re.Match[str]) -> float:
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def read_json_line(line: str) -> Reading | None:
    """``{"progress": 0.37}``, ``{"percent": 37}`` or ``{"done": 12, "total": 50}``,
    each with an optional ``"message"``."""
    if not (line.startswith("{") and line.endswith("}")):
        return None
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    fraction = _json_fraction(doc)
    message = doc.get("message")
    if fraction is None and not isinstance(message, str):
        return None
    return Reading(fraction, JSON, message if isinstance(message, str) else None)


def _json_fraction(doc: Mapping[str, Any]) -> float | None:
    def number(key: str) -> float | None:
        value = doc.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    progress, percent, done, total = number("progress"), number("percent"), number("done"), number("total")
    if progress is not None:
        return progress if 0 <= progress <= 1 else None
    if percent is not None:
        return percent / 100 if 0 <= percent <= 100 else None
    if done is not None and total is not None:
        return _fraction(done, total)
    return None


_BAR = re.compile(r"\|[^|]*\|")


def without_bar(line: str) -> str:
    """A tqdm line as a message: its words and counts, not the bar's glyphs."""
    return " ".join(_BAR.sub(" ", line).split())


def read_line(line: str) -> Reading | None:
    """The progress one line of output shows in ``auto`` mode, if any (without the
    stateful forms: ffmpeg and curl need what came before)."""
    line = line.strip()
    if not line:
        return None
    if "%" not in line and "/" not in line and "{" not in line and " of " not in line.lower():
        return Reading(None, 0, line)  # no form can match: the common case, kept cheap
    reading = read_json_line(line)
    if reading is not None:
        return reading
    match = _TQDM.search(line)
    if match:
        done = float(match.group(2)) * _UNITS[match.group(3)]
        total = float(match.group(4)) * _UNITS[match.group(5)]
        fraction = _fraction(done, total)
        if fraction is None:
            fraction = float(match.group(1)) / 100
        return Reading(fraction, TQDM, without_bar(line))
    match = _TQDM_PERCENT.search(line)  # a bar with an unknown total, or a narrow one
    if match and float(match.group(1)) <= 100:
        return Reading(float(match.group(1)) / 100, TQDM, without_bar(line))
    match = _PERCENT.search(line)
    if match and float(match.group(1)) <= 100:
        return Reading(float(match.group(1)) / 100, PERCENT, line)
    for pattern in (_SIZE_COUNT, _COUNT):
        for match in pattern.finditer(line):
            if _DATE_LIKE.search(line, max(0, match.start() - 12), match.end() + 12):
                continue  # 2026/11/28 is a date, not 2026 of 11
            fraction = _fraction(float(match.group(1)), float(match.group(2)))
            if fraction is not None:
                return Reading(fraction, COUNT, line)
    return Reading(None, 0, line)


class OutputParser:
    """Feed it a command's output chunk by chunk; it keeps the latest progress and
    message. ``form`` is ``"auto"``, ``"none"`` or ``{"regex": ..., "total": N}``."""

    def __init__(self, form: str | Mapping[str, Any] = "auto") -> None:
        self.form = form
        self.regex: re.Pattern[str] | None = None
        self.total: float | None = None
        if isinstance(form, Mapping):
            self.regex = re.compile(form["regex"])
            self.total = form.get("total")
        self.partial = b""
        self.fraction: float | None = None
        self.message: str | None = None
        self.strength = 0  # the strongest form seen so far
        self.duration: float | None = None  # ffmpeg's input duration
        self.curl_meter = False

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True when the progress or message changed."""
        if self.form == "none" or not chunk:
            return False
        data = self.partial + chunk
        # Lines end at \n or at \r (bars redraw in place). The unterminated rest is kept for
        # the next chunk, but read now too: a bar's latest state is rarely followed by anything.
        end = max(data.rfind(b"\n"), data.rfind(b"\r"))
        self.partial = data[end + 1:][-MAX_LINE:]
        if self.regex is None:
            self._learn_context(data)
        tail = data[-TAIL_BYTES:]
        segments = _LINE_END.split(tail)
        if len(tail) < len(data):
            segments = segments[1:]  # the first one may start mid-line
        before = (self.fraction, self.message)
        self._read_newest(segments[-LINES_EXAMINED:], partial=end + 1 < len(data))
        return (self.fraction, self.message) != before

    def _learn_context(self, data: bytes) -> None:
        if self.duration is None and (at := data.find(b"Duration:")) >= 0:
            match = _FFMPEG_DURATION.match(data[at:at + 40].decode("ascii", "replace"))
            if match and _seconds(match) > 0:
                self.duration = _seconds(match)
        if not self.curl_meter and _CURL_HEADER in data:
            self.curl_meter = True

    def _read_newest(self, segments: list[bytes], partial: bool) -> None:
        """Newest line first. Until a form is known, the strongest in view wins; after
        that, the first line of a form at least as strong ends the search. The message is
        the newest line a human would read, progress lines too (ffmpeg's frame= line,
        curl's meter, a bar's counts): it follows the program. An unfinished last line
        becomes the message only if it shows progress (a bar redrawn with \r usually is)."""
        best: Reading | None = None
        message: str | None = None
        for index, segment in enumerate(reversed(segments)):
            reading = self._read(segment.decode("utf-8", "replace"))
            if reading is None:
                continue
            unfinished = partial and index == 0 and reading.fraction is None
            if message is None and reading.message and not unfinished:
                message = reading.message
            if reading.fraction is not None and reading.strength >= self.strength:
                if best is None or reading.strength > best.strength:
                    best = reading
                if self.strength and message is not None:
                    break
        if best is not None:
            self.fraction, self.strength = best.fraction, best.strength
        if message is not None:
            self.message = message.strip()[:MESSAGE_LIMIT]

    def _read(self, line: str) -> Reading | None:
        if self.regex is not None:
            return self._read_regex(line)
        if self.duration is not None:
            match = _FFMPEG_TIME.search(line)
            if match:
                return Reading(min(_seconds(match) / self.duration, 1.0), FFMPEG, " ".join(line.split()))
        if self.curl_meter:
            match = _CURL_ROW.match(line)
            if match and int(match.group(1)) <= 100:
                return Reading(int(match.group(1)) / 100, CURL, " ".join(line.split()))
        return read_line(line)

    def _read_regex(self, line: str) -> Reading | None:
        assert self.regex is not None
        if not line.strip():
            return None
        match = self.regex.search(line)
        if not match:
            return Reading(None, 0, line)
        number = match.group(1) if self.regex.groups else match.group(0)
        try:
            value = float(number)
        except (TypeError, ValueError):  # the group took no part in the match, or is no number
            return Reading(None, 0, line)
        fraction = value / self.total if self.total else value / 100
        return Reading(min(max(fraction, 0.0), 1.0), REGEX, line.strip())
