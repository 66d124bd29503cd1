"""Host side of one warm worker: a fork server in its own bubblewrap sandbox.

`sandbox.pool.SandboxPool` owns the workers and runs one program at a time on
each. Per run the worker hands the fork server (`sandbox/_server.py`) the ends
of three fresh pipes over a Unix socket (SCM_RIGHTS), then feeds stdin and
drains stdout/stderr concurrently with the wait for the server's report, so a
program that writes a lot can never block on a full pipe (the false-timeout
bug of harnesses that wait for the process before reading). Output past the
cap is read and discarded, and the run is killed at once (setting
`output_kill`), so endless output ends as "truncated", never as a timeout.

Every wait has a deadline: a server that does not report by the run's wall
limit plus `hang_grace_s`, or whose socket closes, is declared dead; the pool
then discards it (`kill()`) and starts a replacement.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import signal
import socket
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.outputs import CappedReader, PipeWriter

HEADER = struct.Struct("!II")


class WorkerDead(RuntimeError):
    """The fork server died, hung or broke the protocol; the worker must be replaced."""


@dataclass
class RunSpec:
    """One process for the fork server to start (a compile or a run)."""

    argv: list[str]
    python: bool
    limits: dict[str, Any]
    env: dict[str, str]
    files: list[tuple[str, bytes]] = field(default_factory=list)
    stdin: bytes = b""
    max_output_bytes: int = 1 << 20
    fetch: str | None = None
    sink: dict[str, bytes] | None = None   # receives the fetched file (compile output)


@dataclass
class RawOutcome:
    """What came back: the server's report (None when the worker failed) and the output."""

    report: dict[str, Any] | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    fetched: bytes = b""
    error: str = ""
    output_killed: bool = False


class Worker:
    """One fork server process tree; `execute` must not be called concurrently."""

    def __init__(self, name: str, argv_factory: Callable[[int], list[str]],
                 cgroup_dirs: dict[str, Path], start_timeout_s: float, hang_grace_s: float,
                 output_kill: bool) -> None:
        self.name = name
        self.cgroup_dirs = cgroup_dirs
        self._argv_factory = argv_factory
        self._start_timeout_s = start_timeout_s
        self._hang_grace_s = hang_grace_s
        self._output_kill = output_kill
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        self.dead = False
        self.runs = 0
        self.server_pid: int | None = None   # host pid of the fork server (it sits in the cgroups)

    @property
    def pid(self) -> int | None:
        """Host pid of the outer bwrap process."""
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        host_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._argv_factory(server_end.fileno()), pass_fds=(server_end.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                start_new_session=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        finally:
            server_end.close()
        host_end.setblocking(False)
        self._sock = host_end
        try:
            msg, _ = await asyncio.wait_for(self._recv_frame(), self._start_timeout_s)
        except (asyncio.TimeoutError, EOFError, OSError, ValueError) as exc:
            log = self.server_log()
            await self.kill()
            raise WorkerDead(f"fork server {self.name} did not start ({exc!r}): {log}") from None
        except BaseException:   # cancelled while starting: leave no process behind
            await asyncio.shield(self.kill())
            raise
        if msg.get("op") != "ready":
            await self.kill()
            raise WorkerDead(f"fork server {self.name} sent {msg!r} instead of ready")
        tree = self.process_ids()   # [bwrap, bwrap init, server], or [server] when unsandboxed
        self.server_pid = tree[-1]

    def server_log(self, limit: int = 2000) -> str:
        """Tail of what bwrap / the fork server printed (for error messages)."""
        try:
            self._log.seek(0)
            return self._log.read().decode(errors="replace")[-limit:].strip()
        except (OSError, ValueError):
            return ""

    async def execute(self, spec: RunSpec) -> RawOutcome:
        """Run one process; raises WorkerDead (after collecting the output) if the server fails."""
        if self.dead or self._sock is None:
            raise WorkerDead(f"worker {self.name} is dead")
        loop = asyncio.get_running_loop()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        killed = asyncio.Event()

        def on_overflow() -> None:
            if self._output_kill and not killed.is_set():
                killed.set()
                self._send_kill_now()

        stdout = CappedReader(loop, out_r, spec.max_output_bytes, on_overflow)
        stderr = CappedReader(loop, err_r, spec.max_output_bytes, on_overflow)
        feeder = PipeWriter(loop, in_w, spec.stdin)
        writer = loop.create_task(feeder.feed())
        blob = b"".join(content for _, content in spec.files)
        msg = {"op": "run", "argv": spec.argv, "python": spec.python, "limits": spec.limits,
               "env": spec.env, "fetch": spec.fetch,
               "files": [[name, len(content)] for name, content in spec.files]}
        self.runs += 1
        report: dict[str, Any] | None = None
        fetched, error = b"", ""
        try:
            try:
                await self._send(msg, blob, fds=[in_r, out_w, err_w])
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
            deadline = spec.limits["wall_timeout_s"] + self._hang_grace_s
            report, fetched = await asyncio.wait_for(self._recv_frame(), deadline)
            if report.get("op") == "error":
                error, report = f"fork server error: {report.get('message')}", None
        except asyncio.TimeoutError:
            error = f"worker {self.name} did not report within the wall limit + grace: hung"
        except (EOFError, OSError, ValueError) as exc:
            error = f"worker {self.name} died during the run ({exc!r}) {self.server_log(500)}"
        except asyncio.CancelledError:
            # The caller gave up. The server will still send this run's report, which the
            # next run would read as its own: retire the worker, stop the run, free the fds.
            self.dead = True
            self._send_kill_now()
            writer.cancel()
            for io in (feeder, stdout, stderr):
                io.close()
            raise
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        feeder.close()
        if report is None:
            self.dead = True
            await self.kill()
        await stdout.wait_closed(2.0)
        await stderr.wait_closed(2.0)
        for reader in (stdout, stderr):
            reader.close()
        if report is not None and not report.get("clean", True):
            self.dead = True   # something survived the run's kill: never reuse this worker
        return RawOutcome(report, stdout.data(), stderr.data(), stdout.truncated,
                          stderr.truncated, fetched, error, killed.is_set())

    async def _send(self, msg: dict[str, Any], blob: bytes = b"", fds: list[int] | None = None) -> None:
        assert self._sock is not None
        data = json.dumps(msg).encode()
        head = HEADER.pack(len(data), len(blob))
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sent = self._sock.sendmsg([head], anc)   # 8 bytes into an idle socket: never EAGAIN
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self._sock, head[sent:] + data + blob)

    def _send_kill_now(self) -> None:
        """Ask the server to kill the current run, synchronously.

        Not a task: a task could run after this run's report and hit the next
        run. The socket is idle here (the run's files went out before its
        fork), so a tiny frame goes out whole; if not, the worker is retired.
        """
        if self._sock is None:
            return
        data = json.dumps({"op": "kill"}).encode()
        frame = HEADER.pack(len(data), 0) + data
        try:
            sent = self._sock.send(frame)
        except OSError:
            sent = -1   # the worker is gone: the run's wait notices it
        if sent != len(frame):
            self.dead = True

    async def _recv_exact(self, n: int) -> bytes:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        buf = bytearray()
        while len(buf) < n:
            chunk = await loop.sock_recv(self._sock, n - len(buf))
            if not chunk:
                raise EOFError("fork server closed its socket")
            buf += chunk
        return bytes(buf)

    async def _recv_frame(self) -> tuple[dict[str, Any], bytes]:
        jlen, blen = HEADER.unpack(await self._recv_exact(HEADER.size))
        msg = json.loads(await self._recv_exact(jlen))
        blob = await self._recv_exact(blen) if blen else b""
        return msg, blob

    def process_ids(self) -> list[int]:
        """Host pids of this worker's whole process tree (bwrap, server, the run's processes)."""
        if self._proc is None:
            return []
        found, todo = [], [self._proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children") as fh:
                        todo.extend(int(c) for c in fh.read().split())
            except OSError:
                continue
        return found

    async def kill(self) -> None:
        """Discard the worker: kill its whole tree (process group, then cgroups) and reap bwrap."""
        self.dead = True
        pids = self.process_ids()
        if self._proc is not None and self._proc.returncode is None and len(pids) > 1:
            # Kill the PID namespace's init first (the kernel then kills the whole namespace)
            # and let the outer bwrap reap it and exit: killing the outer one first would leave
            # the init as a zombie for the host's pid 1 to reap.
            _kill(pids[1])
            try:
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), 2.0)
            except asyncio.TimeoutError:
                pass
        if self._proc is not None and self._proc.returncode is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            _kill(pid)
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), 5.0)
            except asyncio.TimeoutError:
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._log.close()

    async def close(self) -> None:
        """Polite stop: closing the socket makes the server exit; kill whatever remains."""
        if self._sock is not None and self._proc is not None and not self.dead:
            self._sock.close()
            self._sock = None
            try:
                await asyncio.wait_for(self._proc.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
        await self.kill()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
