"""Bounded LRU cache of compiled C++ binaries, keyed by hash of compiler + flags + source.

Used by `sandbox.pool.SandboxPool`: the reward service runs the same program
against many tests, so each distinct source is compiled once. Binaries live in
a host directory that every worker sees read-only; a program runs straight
from there. Entries in use are pinned, so eviction never removes a binary a
run is about to exec. Deterministic compile errors are remembered too (in
memory), so a broken submission is not recompiled for every test.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

from sandbox.protocol import ProcessResult


def cache_key(compiler_id: str, flags: tuple[str, ...], source: str) -> str:
    h = hashlib.sha256()
    for part in (compiler_id, "\0".join(flags), source):
        h.update(part.encode())
        h.update(b"\0\1")
    return h.hexdigest()


class CompileCache:
    """LRU over binaries (on disk) and compile failures (in memory)."""

    def __init__(self, directory: Path, capacity: int) -> None:
        self.directory = directory
        self.capacity = capacity
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        self._entries: OrderedDict[str, ProcessResult] = OrderedDict()
        self._failures: OrderedDict[str, ProcessResult] = OrderedDict()
        self._pins: dict[str, int] = {}
        self.hits = 0
        self.misses = 0
        for p in sorted(directory.glob("*.bin"), key=lambda p: p.stat().st_mtime):
            self._entries[p.stem] = ProcessResult(status="ok", return_code=0, message="cached")

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.bin"

    def lookup(self, key: str) -> ProcessResult | None:
        """The compile result for `key` (a binary exists when it is ok), refreshing its LRU slot."""
        for table in (self._entries, self._failures):
            if key in table:
                if table is self._entries and not self.path(key).exists():
                    del table[key]
                    break
                table.move_to_end(key)
                self.hits += 1
                return table[key]
        self.misses += 1
        return None

    def store(self, key: str, binary: bytes, compile_result: ProcessResult) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(binary)
        os.chmod(tmp, 0o755)
        os.replace(tmp, self.path(key))
        self._entries[key] = compile_result
        self._entries.move_to_end(key)
        self._evict(self._entries, on_disk=True, keep=key)

    def store_failure(self, key: str, compile_result: ProcessResult) -> None:
        self._failures[key] = compile_result
        self._failures.move_to_end(key)
        self._evict(self._failures, on_disk=False)

    def pin(self, key: str) -> None:
        self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, key: str) -> None:
        left = self._pins.get(key, 0) - 1
        if left > 0:
            self._pins[key] = left
        else:
            self._pins.pop(key, None)
        self._evict(self._entries, on_disk=True)

    def _evict(self, table: OrderedDict[str, ProcessResult], on_disk: bool,
               keep: str | None = None) -> None:
        """Drop least recently used entries past capacity; pinned ones (in use) wait."""
        for key in list(table):
            if len(table) <= self.capacity:
                return
            if key == keep or (on_disk and key in self._pins):
                continue
            del table[key]
            if on_disk:
                self.path(key).unlink(missing_ok=True)

    def __len__(self) -> int:
        return len(self._entries)
