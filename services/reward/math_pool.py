"""A pool of killable math-verification worker processes with a hard per-item deadline.

Why processes and not threads: math-verify's time-outs use signal.alarm (main
thread only) and some inputs (power towers such as 5^(5^(5^5))) hang inside
C code or eat memory without ever returning to Python. Each worker runs
`math_verifier.verify_item` in its main thread under an address-space cap
(RLIMIT_AS); the parent waits at most `timeout_s` for the answer, and on
time-out kills the worker (SIGKILL) and starts a fresh one. That item comes back
with status "timeout"; other items are untouched.

Who uses it: `serving.RewardService` (one pool per service). Each worker is
driven by its own dispatcher thread, so the asyncio loop never blocks.
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
from collections import deque
from dataclasses import dataclass, field
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


def _error(status: str, message: str) -> dict[str, Any]:
    return {"status": status, "correct": False, "extracted": None, "message": message}


@dataclass
class _Job:
    gold: str
    completion: str
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class _Worker:
    process: Any
    conn: Connection


def _deliver(job: _Job, result: dict[str, Any]) -> None:
    def resolve() -> None:
        if not job.future.done():
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the caller's loop is gone: nobody is waiting for this result
        pass


class MathWorkerPool:
    """Verify math items in `workers` processes, each item under a hard deadline.

    One dispatcher thread per worker keeps up to `pipeline_depth` items in the
    worker's pipe, so the worker starts its next item without waiting for the
    parent to be scheduled (that round trip dominated small items on a loaded
    machine). An item's deadline runs from when it reached the head of its
    worker's line. When a worker is killed, the items queued behind the hung one
    are re-sent to its replacement: only the hung item fails.
    """

    def __init__(self, workers: int, timeout_s: float, memory_mb: int, soft_fraction: float | None,
                 pipeline_depth: int) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.soft_s = None if soft_fraction is None else timeout_s * soft_fraction
        self.pipeline_depth = pipeline_depth
        self._ctx = mp.get_context("forkserver")
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._procs: dict[int, _Worker] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._closed = False
        self._stats = {"items": 0, "timeouts": 0, "errors": 0, "restarts": 0}

    def start(self) -> None:
        """Start the forkserver, the workers and their dispatcher threads (blocking; ~1 s the first time)."""
        self._ctx.set_forkserver_preload(_PRELOAD)
        for slot in range(self.workers):
            self._procs[slot] = self._spawn()
            thread = threading.Thread(target=self._dispatch, args=(slot,), name=f"math-dispatch-{slot}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self.memory_mb, self.soft_s), daemon=True, name="math-worker")
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def _replace(self, slot: int) -> _Worker:
        old = self._procs[slot]
        old.process.kill()
        old.process.join(timeout=5)
        old.conn.close()
        with self._lock:
            self._stats["restarts"] += 1
        if not self._closed:  # no new processes once closing
            self._procs[slot] = self._spawn()
        return self._procs[slot]

    def _count(self, result: dict[str, Any]) -> None:
        with self._lock:
            self._stats["items"] += 1
            self._stats["timeouts"] += result["status"] == "timeout"
            self._stats["errors"] += result["status"] == "error"

    def _fill(self, worker: _Worker, inflight: deque[_Job], resend: deque[_Job]) -> bool:
        """Top up the worker's pipe; False when the pool is shutting down. Raises OSError if the worker is gone."""
        while len(inflight) < self.pipeline_depth:
            if resend:
                job: _Job | None = resend.popleft()
            else:
                try:
                    job = self._jobs.get(block=not inflight)
                except queue.Empty:
                    return True
            if job is None:
                return False
            inflight.append(job)  # before sending: if the send fails, the job is re-sent, not lost
            if not worker.process.is_alive():
                raise OSError("math worker exited while idle")
            worker.conn.send((job.gold, job.completion))
        return True

    def _requeue_and_replace(self, slot: int, inflight: deque[_Job], resend: deque[_Job]) -> None:
        resend.extendleft(reversed(inflight))
        inflight.clear()
        self._replace(slot)

    def _dispatch(self, slot: int) -> None:
        """Thread body: feed one worker, enforce the head item's deadline, replace the worker when needed."""
        inflight: deque[_Job] = deque()
        resend: deque[_Job] = deque()
        head_since = time.monotonic()
        while not self._closed or inflight or resend:
            worker = self._procs[slot]
            was_idle = not inflight
            try:
                if not self._fill(worker, inflight, resend):
                    break
            except (OSError, ValueError):  # the worker died while idle: replace it, keep every job
                if self._closed:
                    break
                self._requeue_and_replace(slot, inflight, resend)
                continue
            if was_idle:
                head_since = time.monotonic()
                with self._lock:
                    self._busy.add(slot)
            remaining = head_since + self.timeout_s - time.monotonic()
            if remaining > 0 and not worker.conn.poll(remaining):
                continue  # the deadline passed: the next round sees remaining <= 0
            head = inflight.popleft()
            broken = True
            if remaining <= 0:
                result = _error("timeout", f"verification exceeded {self.timeout_s:g}s; worker killed and replaced")
            else:
                try:
                    result, broken = worker.conn.recv(), False
                except (EOFError, OSError):
                    result = _error("error", "worker died (memory cap?); replaced")
            if broken:
                self._requeue_and_replace(slot, inflight, resend)
            now = time.monotonic()
            result["elapsed_s"] = now - head_since  # from when the parent saw the item reach the worker's head
            head_since = now
            self._count(result)
            if not inflight and not resend:
                with self._lock:
                    self._busy.discard(slot)
            _deliver(head, result)
        for job in list(inflight) + list(resend):
            _deliver(job, _error("error", "math pool closed"))

    async def verify(self, gold: str, completion: str) -> dict[str, Any]:
        """Verify one item; never raises for item behaviour, never waits past queueing + deadline."""
        if not self._threads:
            raise RuntimeError("MathWorkerPool.start() was not called")
        if self._closed:
            return {**_error("error", "math pool is closed"), "elapsed_s": 0.0}
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._jobs.put(_Job(gold, completion, future, loop))
        return await future

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"workers": self.workers, "busy": len(self._busy), "queued": self._jobs.qsize(), **self._stats}

    def processes(self) -> list[Any]:
        """The live worker processes (for tests and diagnostics)."""
        return [w.process for w in self._procs.values()]

    def close(self) -> None:
        """Stop the dispatchers and workers (politely, then SIGKILL); queued items get an error result."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 5)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                _deliver(job, _error("error", "math pool closed"))
        for w in self._procs.values():
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self._procs.values():
            w.process.join(timeout=1)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=5)
            w.conn.close()
