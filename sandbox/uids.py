"""Claiming unprivileged run uids so that no two live pools on a host share one.

Used by `sandbox.pool.SandboxPool`: each worker slot runs its programs as its
own uid. RLIMIT_NPROC counts processes per uid across the whole host, so two
pools (a test suite next to a running service, or two service replicas) that
used the same uids would eat into each other's process limits. A uid is
claimed by holding an exclusive `flock` on `<lock_dir>/<uid>.lock`; the kernel
releases it when the holder exits, so a crashed pool never leaks its claim.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

SEARCH_SPAN = 1 << 16


class UidAllocator:
    """Hands out the lowest free uids at or above `base`; `close()` releases them."""

    def __init__(self, base: int, lock_dir: Path) -> None:
        self.base = base
        self.lock_dir = lock_dir
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._held: dict[int, int] = {}   # uid -> fd holding its lock

    def claim(self) -> int:
        for uid in range(self.base, self.base + SEARCH_SPAN):
            if uid in self._held:
                continue
            fd = os.open(self.lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._held[uid] = fd
            return uid
        raise RuntimeError(f"no free run uid in [{self.base}, {self.base + SEARCH_SPAN}) "
                           f"(locks in {self.lock_dir})")

    @property
    def held(self) -> list[int]:
        return sorted(self._held)

    def close(self) -> None:
        for fd in self._held.values():
            os.close(fd)   # closing the only fd releases the flock
        self._held.clear()
