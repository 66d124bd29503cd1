"""A pool of killable math-verification worker processes with a hard per-item deadline.

Why processes and not threads: math-verify's time-outs use signal.alarm (main
thread only) and some inputs (power towers such as 5^(5^(5^5))) hang inside
C code or eat memory without ever returning to Python. Each worker runs
`math_verifier.verify_item` in its main thread under an address-space cap
(RLIMIT_AS); the parent waits at most `timeout_s` for the answer, and on
time-out kills the worker (SIGKILL) and starts a fresh one. That item comes back
with status "timeout"; other items are untouched.

Who uses it: `serving.RewardService` (one pool per service). Each worker is
driven by one thread of a private thread pool, so the asyncio loop never blocks.
Workers are forked from a forkserver that has math-verify and sympy imported
already, so a replacement is ready in tens of milliseconds.

Two deadlines: a soft one inside the worker (SIGALRM via setitimer at
a fraction of the deadline, setting `math_soft_deadline_fraction`, raising an exception math-verify does
not catch) ends most slow items while keeping the worker and its warm caches;
the hard one (the parent's SIGKILL at the full deadline) covers code that never
returns to the interpreter. Both give status "timeout".

Not protected against: a worker that stays within its memory cap and deadline
but returns a wrong verdict (that is math-verify's verdict).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import queue
import resource
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)
_PRELOAD = ["math_verify", "sympy", "services.reward.math_verifier"]


class _SoftDeadline(BaseException):
    """Raised by the worker's own timer; a BaseException so math-verify's `except Exception` lets it through."""


def _on_soft_deadline(signum: int, frame: object) -> None:
    raise _SoftDeadline()


def _verify_with_soft_deadline(gold: str, completion: str, soft_s: float | None) -> dict[str, Any]:
    from services.reward.math_verifier import verify_item

    if soft_s is None:
        return verify_item(gold, completion)
    signal.setitimer(signal.ITIMER_REAL, soft_s)
    try:
        return verify_item(gold, completion)
    except _SoftDeadline:
        return {"status": "timeout", "correct": False, "extracted": None,
                "message": f"verification exceeded the soft deadline of {soft_s:.3g}s"}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _worker_main(conn: Connection, memory_mb: int, soft_s: float | None) -> None:
    """Worker loop: receive (gold, completion), answer a result dict; None stops it."""
    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silences "timeout disabled" notes
    signal.signal(signal.SIGALRM, _on_soft_deadline)

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        gold, completion = msg
        try:
            result = _verify_with_soft_deadline(gold, completion, soft_s)
        except MemoryError:
            result = {"status": "error", "correct": False, "extracted": None, "message": "memory cap reached"}
        except RecursionError:
            result = {"status": "error", "correct": False, "extracted": None, "message": "expression too deep"}
        except Exception as err:  # noqa: BLE001 - any verifier bug is this item's error, not the worker's death
            result = {"status": "error", "correct": False, "extracted": None, "message": f"{type(err).__name__}: {err}"[:500]}
        conn.send(result)


@dataclass
class _Worker:
    process: Any
    conn: Connection


class MathWorkerPool:
    """Verify math items in `workers` processes, each item under a hard deadline."""

    def __init__(self, workers: int, timeout_s: float, memory_mb: int, soft_fraction: float | None) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.soft_s = None if soft_fraction is None else timeout_s * soft_fraction
        self.memory_mb = memory_mb
        self._ctx = mp.get_context("forkserver")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._busy = 0
        self._closed = False
        self._stats = {"items": 0, "timeouts": 0, "errors": 0, "restarts": 0}

    def start(self) -> None:
        """Start the forkserver and the workers (blocking; a second or two the first time)."""
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="math-verify")
        for _ in range(self.workers):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self.memory_mb, self.soft_s), daemon=True, name="math-worker")
        proc.start()
        child.close()
        worker = _Worker(proc, parent)
        with self._lock:
            self._all.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            self._stats["restarts"] += 1
        return worker if self._closed else self._spawn()  # no new processes once closing

    def _verify_blocking(self, gold: str, completion: str) -> dict[str, Any]:
        if self._closed:
            return {"status": "error", "correct": False, "extracted": None, "message": "math pool is closed", "elapsed_s": 0.0}
        worker = self._idle.get()
        with self._lock:
            self._busy += 1
        started = time.monotonic()
        try:
            if not worker.process.is_alive():
                worker = self._replace(worker)
            worker.conn.send((gold, completion))
            if worker.conn.poll(self.timeout_s):
                try:
                    result = worker.conn.recv()
                except (EOFError, OSError):
                    result = {"status": "error", "correct": False, "extracted": None, "message": "worker died (memory cap?)"}
                    worker = self._replace(worker)
            else:
                result = {
                    "status": "timeout", "correct": False, "extracted": None,
                    "message": f"verification exceeded {self.timeout_s:g}s; worker killed and replaced",
                }
                worker = self._replace(worker)
        finally:
            self._idle.put(worker)
            with self._lock:
                self._busy -= 1
        result["elapsed_s"] = time.monotonic() - started
        with self._lock:
            self._stats["items"] += 1
            self._stats["timeouts"] += result["status"] == "timeout"
            self._stats["errors"] += result["status"] == "error"
        return result

    async def verify(self, gold: str, completion: str) -> dict[str, Any]:
        """Verify one item; never raises for item behaviour, never waits past queueing + deadline."""
        if self._executor is None:
            raise RuntimeError("MathWorkerPool.start() was not called")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._verify_blocking, gold, completion)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"workers": self.workers, "busy": self._busy, **self._stats}

    def close(self) -> None:
        """Stop all workers (politely, then SIGKILL) and the thread pool."""
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in workers:
            w.process.join(timeout=1)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
