"""Container log files in the CRI format the kubelet reads, and reading them back.

One file per container run; each line is ``<RFC3339Nano time> <stdout|stderr> <F|P> <text>``
(``P`` marks a piece of a line longer than ``MAX_LINE``). The fixed-width UTC timestamps
compare correctly as strings, which is all ``sinceSeconds`` needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_LINE = 16 * 1024


def timestamp(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


@dataclass(frozen=True)
class Entry:
    time: str
    stream: str
    partial: bool
    content: bytes

    def render(self, with_time: bool) -> bytes:
        body = self.content if self.partial else self.content + b"\n"
        return (self.time.encode() + b" " + body) if with_time else body


def parse(line: bytes) -> Entry | None:
    """One CRI log line (without its newline); None if it is not one."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    content = parts[3] if len(parts) == 4 else b""
    return Entry(parts[0].decode(), parts[1].decode(), parts[2] == b"P", content)


def parse_all(data: bytes) -> list[Entry]:
    return [e for e in (parse(line) for line in data.split(b"\n")) if e is not None]


class LogWriter:
    """Appends CRI lines for one container run; stdout and stderr may write concurrently."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("ab", buffering=0)
        self._lock = threading.Lock()
        self.closed = threading.Event()

    def write(self, stream: str, content: bytes, partial: bool = False) -> None:
        line = f"{timestamp()} {stream} {'P' if partial else 'F'} ".encode() + content + b"\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(line)

    def copy(self, source: BinaryIO, stream: str) -> None:
        """Copy a pipe to the log until EOF (the container and all it started are gone)."""
        while True:
            line = source.readline(MAX_LINE)
            if not line:
                return
            if line.endswith(b"\n"):
                self.write(stream, line[:-1])
            else:
                self.write(stream, line, partial=True)

    def close(self) -> None:
        with self._lock:
            self._file.close()
        self.closed.set()


@dataclass(frozen=True)
class Options:
    """The kubelet's log query: follow, tailLines, limitBytes, timestamps, sinceSeconds."""

    follow: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    timestamps: bool = False
    since: str | None = None  # a timestamp() string; earlier lines are skipped


def select(entries: list[Entry], options: Options) -> list[Entry]:
    """Apply ``since`` then ``tailLines`` (counted in whole lines, as the kubelet does)."""
    if options.since is not None:
        entries = [e for e in entries if e.time >= options.since]
    if options.tail_lines is None:
        return entries
    if options.tail_lines <= 0:
        return []
    lines = 0
    start = len(entries)
    for index in range(len(entries) - 1, -1, -1):
        if not entries[index].partial:
            lines += 1
            if lines > options.tail_lines:
                break
        start = index
    return entries[start:]


def render(entries: Iterable[Entry], options: Options) -> bytes:
    out = b"".join(e.render(options.timestamps) for e in entries)
    if options.limit_bytes is not None:
        out = out[: options.limit_bytes]
    return out


def stream(
    path: Path,
    options: Options,
    still_writing: Callable[[], bool],
    stopped: Callable[[], bool] = lambda: False,
    poll: float = 0.2,
) -> Iterator[bytes]:
    """The log as chunks; with ``follow``, keep going until the container's log is closed."""
    data = path.read_bytes() if path.exists() else b""
    complete = data.rfind(b"\n") + 1
    budget = options.limit_bytes
    first = render(select(parse_all(data[:complete]), options), Options(
        timestamps=options.timestamps, limit_bytes=budget))
    if first:
        yield first
    if budget is not None:
        budget -= len(first)
        if budget <= 0:
            return
    if not options.follow:
        return
    offset = complete
    pending = b""
    while not stopped():
        writing = still_writing()  # read before the file, so a final write is not missed
        with path.open("rb") as source:
            source.seek(offset)
            chunk = source.read()
        offset += len(chunk)
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if cut:
            entries = parse_all(pending[:cut])
            pending = pending[cut:]
            if options.since is not None:
                entries = [e for e in entries if e.time >= options.since]
            out = b"".join(e.render(options.timestamps) for e in entries)
            if budget is not None:
                out = out[:budget]
                budget -= len(out)
            if out:
                yield out
            if budget is not None and budget <= 0:
                return
        if not chunk and not writing:
            return
        if not chunk:
            time.sleep(poll)


def content_lines(path: Path) -> list[str]:
    """The log's text (no timestamps or stream tags), one string per line, newlines kept."""
    if not path.exists():
        return []
    lines: list[str] = []
    current = b""
    for entry in parse_all(path.read_bytes()):
        current += entry.content
        if not entry.partial:
            lines.append((current + b"\n").decode("utf-8", errors="replace"))
            current = b""
    if current:
        lines.append(current.decode("utf-8", errors="replace"))
    return lines
