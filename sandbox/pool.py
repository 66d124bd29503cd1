"""SandboxPool: the public entry point, a warm pool of isolated fork servers.

The reward service (`services/reward`) creates one pool and calls
`await pool.run(RunRequest(...))` from many asyncio tasks at once. Each worker
is a fork server pre-started in its own bubblewrap sandbox with its own cgroups
and unprivileged uid (`sandbox.worker`, `sandbox/_server.py`); a run takes a
free worker (excess runs wait, with a deadline), forks one fresh child there
and gets a `RunResult` back: what the program does never raises here. C++ is
compiled inside a worker too (g++, its own limits) and cached by hash.

Starting a fresh `bwrap + python3` costs ~30 ms on the project machine; a
forked run from a warm server costs about a millisecond of overhead, which is
what lets the reward service beat an unisolated harness (see
bench/sandbox_overhead.py). Isolation model and its limits: docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sandbox import bwrap as bw
from sandbox.cgroups import CgroupManager
from sandbox.compile_cache import CompileCache, cache_key
from sandbox.outcome import to_process_result
from sandbox.protocol import ExecutionLimits, ProcessResult, ProcessStatus, RunRequest, RunResult
from sandbox.settings import SandboxSettings
from sandbox.uids import UidAllocator
from sandbox.worker import RunSpec, Worker, WorkerDead

__all__ = ["SandboxPool", "SandboxSettings", "SandboxUnavailable"]
log = logging.getLogger(__name__)
SERVER_SCRIPT = Path(__file__).with_name("_server.py")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be built on this machine (e.g. bubblewrap is missing)."""


class SandboxPool:
    """Warm fork-server workers; `run` is safe to call concurrently from many tasks."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        s = self.settings
        self._bwrap = shutil.which(s.bwrap_path)
        if self._bwrap is None and not s.insecure_no_sandbox:
            raise SandboxUnavailable(
                f"bubblewrap not found ({s.bwrap_path!r} is not on PATH): install the Debian "
                "package `bubblewrap` (apt-get install bubblewrap), or set "
                "ASPO_SANDBOX_INSECURE_NO_SANDBOX=true to run untrusted code WITHOUT isolation")
        if s.insecure_no_sandbox:
            log.warning("!!! SANDBOX DISABLED (insecure_no_sandbox=True): untrusted programs run "
                        "on the host with only rlimits/cgroups. Never do this with real "
                        "untrusted code. !!!")
        if not os.access(s.python_executable, os.X_OK):
            raise SandboxUnavailable(f"python_executable {s.python_executable!r} is not an executable")
        self._sandboxed = not s.insecure_no_sandbox
        self._cgroups: CgroupManager | None = None
        self._uids: UidAllocator | None = None
        self._slot_uid: list[int | None] = [None] * s.workers
        self._cache: CompileCache | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._workers: list[Worker | None] = [None] * s.workers
        self._generation = [0] * s.workers
        self._free: asyncio.Queue[int] | None = None
        self._inflight: dict[str, asyncio.Future[ProcessResult]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._bwrap_version = ""
        self._cxx: str | None = None
        self._compiler_id = ""
        self._runs = self._restarts = self._busy = self._waiting = 0
        self._started = self._closed = False

    # ---- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        """Detect cgroups, prepare the compile cache and start every worker."""
        if self._started:
            return
        s = self.settings
        if self._sandboxed:
            self._bwrap_version = bw.bwrap_version(self._bwrap or "bwrap")
        self._cgroups = CgroupManager(s.cgroup_mode if os.geteuid() == 0 else "none")
        if os.geteuid() == 0:   # only root can switch a run to another uid
            self._uids = UidAllocator(s.run_uid_base, s.uid_lock_dir)
            self._slot_uid = [self._uids.claim() for _ in range(s.workers)]
        self._tmpdir = tempfile.TemporaryDirectory(prefix="aspo-sandbox-")
        os.chmod(self._tmpdir.name, 0o755)
        cache_dir = s.compile_cache_dir or Path(self._tmpdir.name) / "cache"
        self._cache = CompileCache(Path(cache_dir), s.compile_cache_size)
        self._cxx = shutil.which(s.cxx)
        if self._cxx:
            proc = await asyncio.create_subprocess_exec(
                self._cxx, "--version", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            self._compiler_id = f"{os.path.realpath(self._cxx)} {out.decode().splitlines()[:1]}"
        self._free = asyncio.Queue()
        self._started = True
        results = await asyncio.gather(*(self._start_worker(i) for i in range(s.workers)),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise SandboxUnavailable(f"could not start the sandbox workers: {errors[0]}")
        for i in range(s.workers):
            self._free.put_nowait(i)

    async def close(self) -> None:
        """Stop every worker and remove cgroups and temporary files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(self._discard(i) for i in range(len(self._workers))),
                             return_exceptions=True)
        if self._cgroups is not None:
            self._cgroups.close()
        if self._uids is not None:
            self._uids.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    async def __aenter__(self) -> SandboxPool:  # noqa: PYI034 - no typing.Self on 3.10
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- workers --------------------------------------------------------------
    def _workdir(self, slot: int) -> str:
        if self._sandboxed:
            return bw.WORKDIR_IN_SANDBOX
        assert self._tmpdir is not None
        return str(Path(self._tmpdir.name) / f"work{slot}")

    def _cache_path(self, key: str) -> str:
        assert self._cache is not None
        if self._sandboxed:
            return f"{bw.CACHE_DIR_IN_SANDBOX}/{self._cache.path(key).name}"
        return str(self._cache.path(key))

    async def _start_worker(self, slot: int) -> Worker:
        assert self._cgroups is not None and self._cache is not None
        s = self.settings
        self._generation[slot] += 1
        name = f"w{slot}g{self._generation[slot]}"
        dirs = self._cgroups.create_worker(name)
        sandboxed, workdir = self._sandboxed, self._workdir(slot)
        uid = self._slot_uid[slot]
        cache_dir = self._cache.directory

        def argv(control_fd: int) -> list[str]:
            cfg = {"control_fd": control_fd, "pidns": sandboxed, "workdir": workdir, "uid": uid,
                   "mount_tmpfs": sandboxed, "preimport": list(s.preimport_modules),
                   "cgroups": {c: (f"{bw.CGROUP_DIR_IN_SANDBOX}/{c}" if sandboxed else str(d))
                               for c, d in dirs.items()}}
            if not sandboxed:
                return [s.python_executable, "-I", "-B", str(SERVER_SCRIPT), json.dumps(cfg)]
            return bw.build_command(bwrap=self._bwrap or "bwrap", python=s.python_executable,
                                    server_script=SERVER_SCRIPT, server_config=json.dumps(cfg),
                                    cache_dir=cache_dir, cgroup_dirs=dirs)

        worker = Worker(name, argv, dirs, s.worker_start_timeout_s, s.hang_grace_s, s.output_kill)
        try:
            await worker.start()
        except BaseException:
            self._cgroups.kill_and_remove(dirs)
            raise
        self._workers[slot] = worker
        return worker

    async def _discard(self, slot: int) -> None:
        worker, self._workers[slot] = self._workers[slot], None
        if worker is None:
            return
        await worker.close()
        if self._cgroups is not None:
            self._cgroups.kill_and_remove(worker.cgroup_dirs)

    async def _replace(self, slot: int) -> None:
        """Discard a dead worker and put a fresh one in its slot (in the background)."""
        assert self._free is not None
        try:
            await self._discard(slot)
            self._restarts += 1
            if not self._closed:
                await self._start_worker(slot)
        except (WorkerDead, OSError) as exc:   # the next run on this slot tries again
            log.error("replacing sandbox worker %d failed: %s", slot, exc)
        finally:
            self._free.put_nowait(slot)

    async def _execute(self, spec_for: Any, limits: ExecutionLimits, what: str) -> ProcessResult:
        """Run one process on a free worker; every failure becomes a result."""
        if not self._started or self._closed or self._free is None:
            raise RuntimeError("SandboxPool is not running: call `await pool.start()` first")
        self._waiting += 1
        try:
            slot = await asyncio.wait_for(self._free.get(), self.settings.acquire_timeout_s)
        except asyncio.TimeoutError:
            return ProcessResult(status=ProcessStatus.sandbox_error, message=(
                f"no free sandbox worker within acquire_timeout_s={self.settings.acquire_timeout_s}"))
        finally:
            self._waiting -= 1
        self._busy += 1
        replace = False
        worker = None
        try:
            worker = self._workers[slot]
            if worker is None or worker.dead:
                await self._discard(slot)
                worker = await self._start_worker(slot)
            spec = spec_for(slot)
            raw = await worker.execute(spec)
            self._runs += 1
            if spec.sink is not None and spec.fetch and raw.fetched:
                spec.sink[spec.fetch] = raw.fetched
            leftovers = self._cgroups.pids_in(worker.cgroup_dirs) if self._cgroups else set()
            leftovers.discard(worker.server_pid or 0)
            replace = worker.dead or bool(leftovers)
            return to_process_result(raw, _cpu_limit(limits), what)
        except (WorkerDead, OSError) as exc:   # a sandbox fault: the run gets a result
            replace = True
            return ProcessResult(status=ProcessStatus.sandbox_error, message=f"sandbox fault: {exc}")
        finally:
            self._busy -= 1
            if replace or (worker is not None and worker.dead):   # incl. a cancelled run
                task = asyncio.get_running_loop().create_task(self._replace(slot))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                self._free.put_nowait(slot)

    # ---- runs -------------------------------------------------------------------
    def _limits(self, lim: ExecutionLimits) -> dict[str, Any]:
        has_memcg = self._cgroups is not None and "memory" in self._cgroups.roots
        s = self.settings
        return {**lim.model_dump(), "cpu_time_s": _cpu_limit(lim),
                "address_space_mb": None if has_memcg and not s.rlimit_as_with_cgroup
                else lim.memory_mb,
                "stack_mb": min(s.stack_mb, lim.memory_mb)}

    def _env(self, slot: int) -> dict[str, str]:
        wd = self._workdir(slot)
        return {"PATH": "/usr/bin:/bin", "HOME": wd, "TMPDIR": wd, "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1"}

    async def run(self, request: RunRequest) -> RunResult:
        """Run one program (compiling C++ first) and return what happened."""
        lim = request.limits
        if request.language == "python":
            files = [*request.files.items(), ("main.py", request.code.encode())]
            run = await self._execute(lambda slot: RunSpec(
                argv=[f"{self._workdir(slot)}/main.py"], python=True, limits=self._limits(lim),
                env=self._env(slot), files=files, stdin=request.stdin,
                max_output_bytes=lim.max_output_bytes), lim, "run")
            return RunResult(run=run)
        assert self._cache is not None
        key = self._key(request.code)
        for _attempt in range(3):
            compiled = await self._compiled(request)
            if compiled.status != ProcessStatus.ok:
                return RunResult(compile=compiled, run=None)
            self._cache.pin(key)
            if self._cache.path(key).exists():
                break
            self._cache.unpin(key)   # evicted while this task waited: compile again
        else:
            return RunResult(compile=compiled, run=ProcessResult(
                status=ProcessStatus.sandbox_error,
                message="compiled binary evicted repeatedly: raise compile_cache_size"))
        try:
            run = await self._execute(lambda slot: RunSpec(
                argv=[self._cache_path(key)], python=False, limits=self._limits(lim),
                env=self._env(slot), files=list(request.files.items()), stdin=request.stdin,
                max_output_bytes=lim.max_output_bytes), lim, "run")
        finally:
            self._cache.unpin(key)
        return RunResult(compile=compiled, run=run)

    def _key(self, source: str) -> str:
        return cache_key(self._compiler_id, self.settings.cxx_flags, source)

    async def _compiled(self, request: RunRequest) -> ProcessResult:
        """Compile result for the request's source: cached, in flight elsewhere, or compiled now."""
        assert self._cache is not None
        if self._cxx is None:
            return ProcessResult(status=ProcessStatus.sandbox_error,
                                 message=f"C++ compiler {self.settings.cxx!r} not found on PATH")
        key = self._key(request.code)
        cached = self._cache.lookup(key)
        if cached is not None:
            return cached
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[ProcessResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._compile(key, request)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()   # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    async def _compile(self, key: str, request: RunRequest) -> ProcessResult:
        assert self._cache is not None and self._cxx is not None
        s, lim = self.settings, request.limits
        climits = ExecutionLimits(
            wall_timeout_s=request.compile_timeout_s, memory_mb=s.compile_memory_mb,
            max_processes=s.compile_max_processes, max_file_size_mb=max(lim.max_file_size_mb, 256),
            max_open_files=max(lim.max_open_files, 256), max_output_bytes=lim.max_output_bytes,
            workdir_size_mb=max(lim.workdir_size_mb, 256))
        argv = [self._cxx, *s.cxx_flags, "main.cpp", "-o", "prog"]
        fetched: dict[str, bytes] = {}

        def spec(slot: int) -> RunSpec:
            return RunSpec(argv=argv, python=False, limits=self._limits(climits), env=self._env(slot),
                           files=[("main.cpp", request.code.encode())], fetch="prog",
                           max_output_bytes=lim.max_output_bytes, sink=fetched)

        result = await self._execute(spec, climits, "compile")
        if result.status == ProcessStatus.ok and fetched.get("prog"):
            self._cache.store(key, fetched["prog"], result)
        elif result.status == ProcessStatus.ok:
            result = result.model_copy(update={"status": ProcessStatus.sandbox_error,
                                               "message": "compiler produced no binary"})
        elif result.status == ProcessStatus.nonzero_exit:
            self._cache.store_failure(key, result)
        return result

    # ---- introspection -------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counters for Prometheus: workers, busy, runs, restarts, compile cache."""
        c = self._cache
        return {"workers": len(self._workers), "busy": self._busy, "runs": self._runs,
                "restarts": self._restarts, "waiting": self._waiting,
                "compile_cache_entries": len(c) if c else 0,
                "compile_cache_hits": c.hits if c else 0,
                "compile_cache_misses": c.misses if c else 0}

    def isolation_report(self) -> dict[str, Any]:
        """What isolation is in force, for logs and the service's /health."""
        cg = self._cgroups
        uid = (f"{self._uids.held} (one unprivileged uid per worker, claimed host-wide)"
               if self._uids is not None else "the service's uid")
        return {
            "sandbox": "bubblewrap" if self._sandboxed else "NONE (insecure_no_sandbox=True)",
            "bubblewrap_version": self._bwrap_version or None,
            "namespaces": list(bw.NAMESPACES) if self._sandboxed else [],
            "network": "none (empty network namespace)" if self._sandboxed else "HOST NETWORK",
            "cgroup_mode": cg.version if cg else "none",
            "memory_limit": (cg.mechanism("memory") if cg else None)
            or "RLIMIT_AS per process (no memory cgroup)",
            "pids_limit": (cg.mechanism("pids") if cg else None)
            or "RLIMIT_NPROC of the worker's unprivileged uid (no pids cgroup)",
            "run_uid": uid,
            "filesystem": ("read-only /usr (no /usr/local), minimal /etc, private /proc and /dev; "
                           "per-run tmpfs at /tmp (workdir_size_mb), unmounted after the run")
            if self._sandboxed else "HOST FILESYSTEM (per-run temporary dir)",
            "other_limits": {"wall_clock": "deadline, then SIGKILL of every process of the run",
                             "cpu_time": "RLIMIT_CPU", "file_size": "RLIMIT_FSIZE",
                             "open_files": "RLIMIT_NOFILE", "core_dumps": "RLIMIT_CORE=0"},
        }


def _cpu_limit(lim: ExecutionLimits) -> float:
    return float(lim.cpu_time_s) if lim.cpu_time_s is not None else float(math.ceil(lim.wall_timeout_s))
