"""Resumable, idempotent results files (JSON lines).

Every finished evaluation item is appended as one JSON line keyed by ``(item_id, config_hash, seed)``.
Re-running the same command skips keys already present, so a killed run resumes with nothing redone,
and a retried append of the same key writes nothing, so nothing is duplicated. A line cut short by a
kill is dropped when the file is reopened.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def config_hash(config: Any) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def result_key(item_id: str, config_hash_: str, seed: int) -> str:
    """The identity of one result row."""
    return f"{item_id}|{config_hash_}|{seed}"


class ResultsFile:
    """An append-only JSONL file of result rows with unique keys.

    Args:
        path: the file (its folder is created).

    Rows must carry ``item_id``, ``config_hash`` and ``seed``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._keys = {self.key_of(r) for r in self._read()}

    @staticmethod
    def key_of(row: dict[str, Any]) -> str:
        """The key of a row."""
        return result_key(str(row["item_id"]), str(row["config_hash"]), int(row["seed"]))

    def _repair(self) -> None:
        """Drop a trailing partial line left by a killed writer."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with open(self.path, "r+b") as fh:
            fh.truncate(cut)

    def _read(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def append(self, row: dict[str, Any]) -> bool:
        """Append ``row`` unless its key is already present; returns True when written.

        Safe across processes: the check and the write happen under an exclusive lock, after
        re-reading the keys other writers may have added.
        """
        key = self.key_of(row)
        if key in self._keys:
            return False
        line = json.dumps(row, default=str) + "\n"
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._keys |= {self.key_of(r) for r in self._read()}
            if key in self._keys:
                return False
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        self._keys.add(key)
        return True

    def rows(self) -> list[dict[str, Any]]:
        """All rows, first occurrence of each key only."""
        seen: set[str] = set()
        out = []
        for row in self._read():
            key = self.key_of(row)
            if key not in seen:
                seen.add(key)
                out.append(row)
        return out
