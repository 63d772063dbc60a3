"""Progress read from command output: every form, on real samples, and the noise that
must not be read as progress."""

from __future__ import annotations

import pytest

from pool.parsers import OutputParser, read_line

TQDM_ASCII = "\r  0%|          | 0/100 [00:00<?, ?it/s]\r 45%|####5     | 45/100 [00:04<00:05, 9.80it/s]"
TQDM_UNICODE = "\rframes:  45%|████▌     | 45/100 [00:04<00:05,  9.80it/s]"
TQDM_SCALED = "\rdownload:  83%|████████▎ | 2.50M/3.00M [00:00<00:00, 15.9MB/s]"
PIP = "   ━━━━━━━━━━━━━━━━━━━━╸━━━━━━━━━━━━━━━━━━━ 1.2/2.4 MB 5.0 MB/s eta 0:00:01"
WGET_BAR = "big.iso             45%[========>           ]  45.00M  10.0MB/s    eta 5s     "
WGET_DOTS = "  4096K .......... .......... .......... .......... ..........  8% 1.23M 0s"
RSYNC_PROGRESS2 = "    473,956,352  45%   10.05MB/s    0:00:45 (xfr#3, to-chk=12/40)"
CURL = (
    "  % Total    % Received % Xferd  Average Speed   Time    Time     Time  Current\n"
    "                                 Dload  Upload   Total   Spent    Left  Speed\n"
    "\r  0     0    0     0    0     0      0      0 --:--:-- --:--:-- --:--:--     0"
    "\r 45  100M   45 45.0M    0     0  10.0M      0  0:00:10  0:00:04  0:00:06 10.0M"
)
FFMPEG = (
    "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'in.mp4':\n"
    "  Duration: 00:01:00.00, start: 0.000000, bitrate: 1205 kb/s\n"
    "Stream mapping:\n  Stream #0:0 -> #0:0 (h264 (native) -> vp9 (libvpx-vp9))\n"
    "frame=  360 fps= 30 q=28.0 size=    1024kB time=00:00:15.00 bitrate= 559.2kbits/s speed=1.25x    \r"
)


def parse(output: str, form: object = "auto", chunk: int = 0) -> OutputParser:
    parser = OutputParser(form)  # type: ignore[arg-type]
    data = output.encode()
    if chunk:
        for start in range(0, len(data), chunk):
            parser.feed(data[start:start + chunk])
    else:
        parser.feed(data)
    return parser


@pytest.mark.parametrize("name, output, expected", [
    ("plain print", "working\n37%\n", 0.37),
    ("decimal percent with space", "done 37.5 %\n", 0.375),
    ("tqdm ascii, \\r-updated", TQDM_ASCII, 0.45),
    ("tqdm unicode with a description", TQDM_UNICODE, 0.45),
    ("tqdm with unit scaling", TQDM_SCALED, 2.5 / 3.0),
    ("pip download", PIP, 0.5),
    ("wget bar", WGET_BAR, 0.45),
    ("wget dots", WGET_DOTS, 0.08),
    ("rsync --info=progress2", RSYNC_PROGRESS2, 0.45),
    ("curl meter", CURL, 0.45),
    ("ffmpeg time over duration", FFMPEG, 0.25),
    ("json progress", '{"progress": 0.37, "message": "resizing"}\n', 0.37),
    ("json percent", '{"percent": 37}\n', 0.37),
    ("json done/total", '{"done": 12, "total": 50}\n', 0.24),
    ("bracketed count", "[12/50] compiling foo.c\n", 0.24),
    ("step count", "step 12/50: training\n", 0.24),
    ("of count", "Processing file 12 of 50\n", 0.24),
    ("count at line start", "12/50 done\n", 0.24),
    ("the latest value wins", "10%\n20%\n30%\n", 0.30),
])
def test_auto_reads_progress(name: str, output: str, expected: float) -> None:
    assert parse(output).fraction == pytest.approx(expected), name


@pytest.mark.parametrize("name, output", [
    ("a date", "2026/11/28 started the run\n"),
    ("a date with time", "log 2026/11/28 10:00:00 ok\n"),
    ("a ratio over 100 percent", "compression 250% better\n"),
    ("a fraction in prose", "ratio was 3/2 overall\n"),
    ("a count larger than its total", "[60/50] what\n"),
    ("a url path", "GET /api/v1/items 200\n"),
    ("json without progress", '{"level": "info"}\n'),
    ("a version number", "Python 3.11.7 on linux\n"),
])
def test_noise_is_not_progress(name: str, output: str) -> None:
    assert parse(output).fraction is None, name


def test_a_stronger_form_is_not_overridden_by_a_stray_percentage() -> None:
    parser = parse(TQDM_ASCII + "\n/dev/sda1 is 100% of disk used\n")
    assert parser.fraction == pytest.approx(0.45)
    parser = parse('{"progress": 0.2}\nwarning: 99% full\n')
    assert parser.fraction == pytest.approx(0.2)


def test_chunks_split_anywhere_give_the_same_answer() -> None:
    for chunk in (1, 3, 7, 64):
        assert parse(FFMPEG, chunk=chunk).fraction == pytest.approx(0.25)
        assert parse(TQDM_ASCII, chunk=chunk).fraction == pytest.approx(0.45)
        assert parse("a\n12%\nb 30%\n", chunk=chunk).fraction == pytest.approx(0.30)


def test_the_last_human_line_is_the_message_progress_lines_too() -> None:
    parser = parse("loading model\n" + TQDM_ASCII)
    assert parser.message is not None and "|" not in parser.message and "/100" in parser.message
    assert parse('{"progress": 0.5, "message": "halfway there"}\n').message == "halfway there"
    assert parse("first\nsecond\n\n").message == "second"


def test_explicit_regex_with_and_without_total() -> None:
    frames = "frame=  300 fps=30\nframe=  600 fps=30\n"
    assert parse(frames, {"regex": r"frame=\s*(\d+)", "total": 1200}).fraction == pytest.approx(0.5)
    assert parse("at 40 pct\n", {"regex": r"(\d+) pct"}).fraction == pytest.approx(0.4)
    assert parse("100%\n", {"regex": r"frame=(\d+)", "total": 10}).fraction is None


def test_none_reads_nothing() -> None:
    parser = parse("50%\n", "none")
    assert parser.fraction is None and parser.message is None


def test_a_line_without_newlines_does_not_grow_without_bound() -> None:
    parser = OutputParser()
    for _ in range(100):
        parser.feed(b"x" * 100_000)
    assert len(parser.partial) <= 64 * 1024


@pytest.mark.parametrize("line, expected", [("", None), ("   ", None)])
def test_blank_lines_say_nothing(line: str, expected: object) -> None:
    assert read_line(line) is expected


def test_the_message_follows_ffmpeg_and_curl_as_they_run() -> None:
    ffmpeg = OutputParser()
    ffmpeg.feed(b"  Duration: 00:01:00.00, start: 0.000000, bitrate: 1200 kb/s\n")
    ffmpeg.feed(b"frame=    1 fps=0.0 q=0.0 size=       0kB time=-00:00:00.03 bitrate=N/A speed=N/A    \r")
    ffmpeg.feed(b"frame= 1200 fps= 30 q=28.0 size=    2048kB time=00:00:49.20 bitrate= 341.0kbits/s speed=1.0x    \r")
    assert ffmpeg.fraction == pytest.approx(0.82)
    assert ffmpeg.message is not None and "frame= 1200" in ffmpeg.message and "time=00:00:49.20" in ffmpeg.message
    curl = OutputParser()
    curl.feed(b"  % Total    % Received % Xferd  Average Speed   Time    Time     Time  Current\n")
    curl.feed(b"                                 Dload  Upload   Total   Spent    Left  Speed\n")
    curl.feed(b"\r 37  100M   37 37.0M    0     0  10.0M      0  0:00:10  0:00:03  0:00:07 10.0M")
    assert curl.fraction == pytest.approx(0.37)
    assert curl.message is not None and curl.message.startswith("37 100M 37 37.0M")
