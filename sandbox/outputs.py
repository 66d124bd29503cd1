"""Non-blocking pipe I/O for runs: capped output readers and a stdin writer.

Used by `sandbox.worker.Worker`. Reading is driven by the event loop
(`add_reader`), so stdout and stderr drain concurrently with each other, with
the stdin writer and with the wait for the fork server's report: a program
blocked on a full pipe cannot happen. Bytes past the cap are read and thrown
away (the writer never blocks) and the reader reports `truncated`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

CHUNK = 1 << 16


class CappedReader:
    """Drains one pipe read end, keeping the first `cap` bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, cap: int,
                 on_overflow: Callable[[], None]) -> None:
        self._loop = loop
        self._fd = fd
        self._cap = cap
        self._on_overflow = on_overflow
        self._chunks: list[bytes] = []
        self._kept = 0
        self.truncated = False
        self.total = 0
        self._eof = asyncio.Event()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, CHUNK)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._loop.remove_reader(self._fd)
                self._eof.set()
                return
            self.total += len(chunk)
            room = self._cap - self._kept
            if room > 0:
                keep = chunk[:room]
                self._chunks.append(keep)
                self._kept += len(keep)
            if self.total > self._cap and not self.truncated:
                self.truncated = True
                self._on_overflow()

    async def wait_closed(self, timeout_s: float) -> bool:
        """Wait for EOF (every writer gone); False when it did not come in time."""
        try:
            await asyncio.wait_for(self._eof.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def data(self) -> bytes:
        return b"".join(self._chunks)

    def close(self) -> None:
        if not self._eof.is_set():
            self._loop.remove_reader(self._fd)
            self._eof.set()
        try:
            os.close(self._fd)
        except OSError:
            pass


class PipeWriter:
    """Feeds `data` to a pipe without blocking the loop, then closes it (EOF for the program).

    A program that exits early or never reads is not an error (EPIPE ends the
    feed quietly). `close()` is idempotent and may be called at any time, even
    while `feed()` waits or before it started: it unregisters the fd from the
    loop before closing it, so no stale registration can hit a reused fd number.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
        self._loop = loop
        self._fd = fd
        self._data = data
        self._closed = False
        self._registered = False
        os.set_blocking(fd, False)

    async def feed(self) -> None:
        view = memoryview(self._data)
        ready = asyncio.Event()
        try:
            while view and not self._closed:
                try:
                    n = os.write(self._fd, view[:CHUNK])
                    view = view[n:]
                    continue
                except BlockingIOError:
                    pass
                except OSError:   # EPIPE: the program closed stdin / exited
                    return
                ready.clear()
                self._loop.add_writer(self._fd, ready.set)
                self._registered = True
                try:
                    await ready.wait()
                finally:
                    self._unregister()
        finally:
            self.close()

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self._loop.remove_writer(self._fd)

    def close(self) -> None:
        if not self._closed:
            self._unregister()
            self._closed = True
            os.close(self._fd)
