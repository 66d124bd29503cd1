"""Stop signals for the long-running foreground commands (`aspo run`, `aspo experiment`).

Both stop cleanly on KeyboardInterrupt (children drained, checkpointed and
stopped in order). A process started in the background by a shell without job
control (`nohup aspo run ... &`, a CI script) begins with SIGINT *ignored*, so
Python never turns it into KeyboardInterrupt, and `kill PID` (SIGTERM) would
end the command without stopping anything it started. `interrupt_on_signals`
makes SIGINT and SIGTERM raise KeyboardInterrupt in the main thread either way,
and records which one arrived for the exit status.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Received:
    """The last stop signal delivered inside `interrupt_on_signals` (None: none yet)."""

    signum: int | None = None

    def exit_code(self) -> int:
        """128 + signal number, the shell's convention (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + (self.signum or signal.SIGINT)


@contextmanager
def interrupt_on_signals() -> Iterator[Received]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt; previous handlers come back after."""
    received = Received()

    def handler(signum: int, _frame: object) -> None:
        received.signum = signum
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield received
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Ignore further stop signals while a clean stop runs (a second Ctrl-C must not cut it short)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
