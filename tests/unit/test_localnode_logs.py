"""Container logs: CRI-format files and the kubelet's log query options."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from devkit.localnode import logs
from devkit.localnode.logserver import parse_options

T = [f"2030-01-01T00:00:0{i}.000000000Z" for i in range(6)]
FILE = (
    f"{T[0]} stdout F one\n"
    f"{T[1]} stderr F two\n"
    f"{T[2]} stdout P thr\n"
    f"{T[3]} stdout F ee\n"
    f"{T[4]} stdout F \n"
    f"{T[5]} stdout F six\n"
).encode()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (logs.Options(), b"one\ntwo\nthree\n\nsix\n"),
        (logs.Options(tail_lines=2), b"\nsix\n"),
        (logs.Options(tail_lines=3), b"three\n\nsix\n"),  # a split line counts once
        (logs.Options(tail_lines=0), b""),
        (logs.Options(tail_lines=99), b"one\ntwo\nthree\n\nsix\n"),
        (logs.Options(limit_bytes=6), b"one\ntw"),
        (logs.Options(since=T[4]), b"\nsix\n"),
        (logs.Options(timestamps=True, tail_lines=1), f"{T[5]} six\n".encode()),
    ],
)
def test_select_and_render(options: logs.Options, expected: bytes) -> None:
    entries = logs.parse_all(FILE)
    assert logs.render(logs.select(entries, options), options) == expected


def test_stream_without_follow(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(FILE)
    out = b"".join(logs.stream(path, logs.Options(tail_lines=1), lambda: False))
    assert out == b"six\n"


def test_follow_returns_what_is_written_until_the_log_closes(tmp_path: Path) -> None:
    writer = logs.LogWriter(tmp_path / "0.log")
    writer.write("stdout", b"first")
    chunks: list[bytes] = []

    def follow() -> None:
        options = logs.Options(follow=True)
        for chunk in logs.stream(writer.path, options, lambda: not writer.closed.is_set(),
                                 poll=0.01):
            chunks.append(chunk)

    reader = threading.Thread(target=follow)
    reader.start()
    writer.write("stderr", b"second")
    writer.close()
    reader.join(5)
    assert not reader.is_alive()
    assert b"".join(chunks) == b"first\nsecond\n"


def test_writer_splits_long_lines_and_keeps_streams(tmp_path: Path) -> None:
    writer = logs.LogWriter(tmp_path / "0.log")
    writer.copy(io.BytesIO(b"short\n" + b"x" * (logs.MAX_LINE + 5) + b"\nend"), "stderr")
    writer.close()
    entries = logs.parse_all((tmp_path / "0.log").read_bytes())
    assert [(e.stream, e.partial, len(e.content)) for e in entries] == [
        ("stderr", False, 5), ("stderr", True, logs.MAX_LINE), ("stderr", False, 5),
        ("stderr", True, 3)]
    assert logs.content_lines(tmp_path / "0.log") == [
        "short\n", "x" * (logs.MAX_LINE + 5) + "\n", "end"]


def test_timestamps_sort_as_strings() -> None:
    assert logs.timestamp(1_000_000_000) < logs.timestamp(1_000_000_001)
    assert logs.timestamp(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, logs.Options()),
        ({"follow": ["true"], "tailLines": ["5"], "limitBytes": ["10"],
          "timestamps": ["1"]},
         logs.Options(follow=True, tail_lines=5, limit_bytes=10, timestamps=True)),
        ({"sinceSeconds": ["10"]}, logs.Options(since=logs.timestamp(90_000_000_000))),
        ({"sinceTime": ["1970-01-01T00:01:40Z"]},
         logs.Options(since=logs.timestamp(100_000_000_000))),
    ],
)
def test_query_parsing(query: dict[str, list[str]], expected: logs.Options) -> None:
    assert parse_options(query, now=100.0) == expected
