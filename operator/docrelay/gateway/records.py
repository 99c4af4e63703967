"""A run attempt's bounded record, pure: the counts of everything that happened and the last
`limit` entries. The egress proxy's connections (`<job>-egress`, egress.RunRecord) and the
broker's actions (`<job>-broker`, dryrun.ActionRecord) are two kinds of it; each gateway
process writes its own part of a record and readers merge the parts (`merge_parts`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar


class Entry(Protocol):
    def to_json(self, paths: bool = True) -> dict[str, Any]: ...


E = TypeVar("E", bound=Entry)


@dataclass
class BoundedRecord(Generic[E]):
    """Counts of all entries (`counts`, a kind's own), the last `limit` entries kept, and how
    many older ones were dropped. `to_json(paths=False)` leaves each entry's free text out."""

    limit: int = 200
    entries: deque[E] = field(default_factory=deque)
    dropped: int = 0

    def add(self, entry: E) -> None:
        self.count(entry)
        self.entries.append(entry)
        while len(self.entries) > self.limit:
            self.entries.popleft()
            self.dropped += 1

    def count(self, entry: E) -> None:
        """Add `entry` to the kind's counts."""
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        """The kind's counts, by their JSON keys, in the order they are written."""
        raise NotImplementedError

    def to_json(self, paths: bool = True) -> dict[str, Any]:
        return {
            **self.counts(),
            "dropped": self.dropped,
            "entries": [e.to_json(paths) for e in self.entries],
        }


def merge_parts(
    parts: Iterable[Mapping[str, Any]], counts: Iterable[str], limit: int
) -> dict[str, Any]:
    """One record from the parts several gateway processes wrote: the `counts` (JSON keys)
    and `dropped` summed, entries merged by time, the last `limit` kept."""
    total: dict[str, Any] = dict.fromkeys([*counts, "dropped"], 0)
    entries: list[dict[str, Any]] = []
    for part in parts:
        for key in total:
            value = part.get(key)
            total[key] += value if isinstance(value, int) else 0
        entries.extend(e for e in part.get("entries") or [] if isinstance(e, dict))
    entries.sort(key=lambda e: str(e.get("at", "")))
    total["dropped"] += max(0, len(entries) - limit)
    total["entries"] = entries[-limit:] if limit else []
    return total
