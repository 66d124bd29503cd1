"""Fork server: runs INSIDE a worker's bubblewrap sandbox (Debian /usr/bin/python3).

Standalone on purpose: it imports only the standard library, because the
sandbox shows it nothing of the project tree or the venv. The host side
(`sandbox.worker.Worker`) starts one per worker and talks to it over a Unix
socket (fd 3) with length-prefixed JSON frames; per run it passes the run's
stdin/stdout/stderr pipe ends as SCM_RIGHTS file descriptors, so the program's
output goes straight to the host (no relaying through this process).

Per run: mount a fresh size-capped tmpfs on the work dir, write the files,
fork ONE child (new session, moved into the worker's cgroups, rlimits, an
unprivileged uid, cleared environment), and wait for it with a wall-clock
deadline. A Python child runs the program inside the forked, already warm
interpreter (no exec: that is what makes a run cost ~1 ms instead of ~30 ms);
anything else is exec'd. Afterwards every remaining process of the run is
killed (kill(-1) inside the worker's own PID namespace, where this server is
the child subreaper), reaped, and the tmpfs unmounted, so nothing survives.

The server itself is non-dumpable and runs as root with a few capabilities;
the program runs as another uid, so it can neither signal nor ptrace it.
"""

import ctypes
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time

HEADER = struct.Struct("!II")  # json length, blob length
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2
SYS_CLOSE_RANGE = 436  # same number on x86-64 and arm64
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("host closed the control socket")
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    """One frame: header (+ up to 3 fds attached to its first byte), JSON, blob."""
    fds = []
    first, anc, _flags, _addr = sock.recvmsg(HEADER.size, socket.CMSG_SPACE(16 * 4))
    for level, ctype, data in anc:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4]))
    if not first:
        raise EOFError("host closed the control socket")
    head = first + recv_exact(sock, HEADER.size - len(first))
    jlen, blen = HEADER.unpack(head)
    msg = json.loads(recv_exact(sock, jlen))
    blob = recv_exact(sock, blen) if blen else b""
    return msg, blob, fds


def send_frame(sock, msg, blob=b""):
    data = json.dumps(msg).encode()
    sock.sendall(HEADER.pack(len(data), len(blob)) + data + blob)


class Server:
    def __init__(self, sock, cfg):
        self.sock = sock
        self.cfg = cfg
        self.pidns = cfg["pidns"]          # True inside bwrap: kill(-1) is confined to the run
        self.workdir = cfg["workdir"]
        self.uid = cfg["uid"]
        self.cg = cfg["cgroups"]            # {"memory": dir, "pids": dir}, either may be absent

    # ---- per-run environment -------------------------------------------------
    def _prepare_workdir(self, size_mb):
        if self.cfg["mount_tmpfs"]:
            opts = f"size={size_mb}m,nr_inodes=65536,mode=0700,uid={self.uid},gid={self.uid}"
            _check(_libc.mount(b"tmpfs", self.workdir.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                               opts.encode()), "mount tmpfs")
        else:
            os.makedirs(self.workdir, mode=0o700, exist_ok=True)
            if self.uid is not None:
                os.chown(self.workdir, self.uid, self.uid)

    def _wipe_workdir(self):
        if self.cfg["mount_tmpfs"]:
            _check(_libc.umount2(self.workdir.encode(), MNT_DETACH), "umount tmpfs")
        else:
            import shutil
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _write_files(self, names, blob):
        pos = 0
        for rel, size in names:
            path = os.path.join(self.workdir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(blob[pos:pos + size])
            pos += size
        if self.uid is None:
            return
        for root, dirs, files in os.walk(self.workdir):
            for name in dirs + files:
                os.chown(os.path.join(root, name), self.uid, self.uid)

    def _cg_write(self, ctrl, name, value):
        with open(os.path.join(self.cg[ctrl], name), "w") as fh:
            fh.write(str(value))

    def join_cgroups(self):
        """Move this server into the worker's cgroups once, so each run's child is born there.

        Moving a process between cgroups waits for an RCU grace period (milliseconds,
        more under load); forking inside the cgroup costs nothing. The server is
        counted in the limits; each run's child raises its oom_score_adj to the
        maximum, so an OOM in the cgroup kills the run rather than the server.
        """
        if not self.cg:
            return
        for ctrl in self.cg:
            self._cg_write(ctrl, "cgroup.procs", os.getpid())

    def _memory_usage(self):
        for name in ("memory.usage_in_bytes", "memory.current"):
            try:
                with open(os.path.join(self.cg["memory"], name)) as fh:
                    return int(fh.read())
            except OSError:
                continue
        return 0

    def _set_cgroup_limits(self, lim):
        """The run's limits, or none at all (lim=None) between runs, when only the server is
        in the cgroups: it must never be OOM-killed receiving the next run's files."""
        if self.cg.get("memory"):
            mem = -1 if lim is None else (lim["memory_mb"] << 20) + self._memory_usage()
            if os.path.exists(os.path.join(self.cg["memory"], "memory.limit_in_bytes")):  # v1
                # memsw must stay >= mem: lowering sets mem first, raising memsw first.
                names = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
                names = [n for n in names if os.path.exists(os.path.join(self.cg["memory"], n))]
                try:
                    for n in names:
                        self._cg_write("memory", n, mem)
                except OSError:
                    for n in reversed(names):
                        self._cg_write("memory", n, mem)
            else:
                self._cg_write("memory", "memory.max", "max" if lim is None else mem)
                if os.path.exists(os.path.join(self.cg["memory"], "memory.swap.max")):
                    self._cg_write("memory", "memory.swap.max", 0)
        if self.cg.get("pids"):   # + 1: this server
            self._cg_write("pids", "pids.max", "max" if lim is None else lim["max_processes"] + 1)

    def _oom_kills(self):
        d = self.cg.get("memory")
        if not d:
            return 0
        name = "memory.oom_control"
        if not os.path.exists(os.path.join(d, name)):  # v2
            name = "memory.events"
        try:
            with open(os.path.join(d, name)) as fh:
                for line in fh:
                    key, _, val = line.partition(" ")
                    if key == "oom_kill":
                        return int(val)
        except OSError:
            pass
        return 0

    # ---- the child -----------------------------------------------------------
    def _child(self, req, fds):
        """Runs in the forked child; never returns."""
        try:
            os.setsid()
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if self.cg.get("memory"):
                with open("/proc/self/oom_score_adj", "w") as fh:
                    fh.write("1000")   # the OOM killer's first choice: the run, not the server
            for i, fd in enumerate(fds):
                os.dup2(fd, i)
            _close_from(3)
            self._apply_rlimits(req["limits"])
            os.chdir(self.workdir)
            if self.uid is not None:
                os.setgroups([])
                os.setresgid(self.uid, self.uid, self.uid)
                os.setresuid(self.uid, self.uid, self.uid)
            _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
            _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
            os.umask(0o022)
            os.environ.clear()
            os.environ.update(req["env"])
            if req.get("python"):
                sys.modules["_pyrunner"].run_python(req["argv"][0], self.workdir)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(req["argv"][0], req["argv"], req["env"])
        except BaseException as exc:  # noqa: BLE001 - report setup failures on the run's stderr
            try:
                os.write(2, f"sandbox: could not start the program: {exc!r}\n".encode())
            finally:
                os._exit(127)

    @staticmethod
    def _apply_rlimits(lim):
        cpu = int(lim["cpu_time_s"] + 0.999)
        mb = 1 << 20
        space = resource.RLIM_INFINITY if lim["address_space_mb"] is None else lim["address_space_mb"] * mb
        settings = [
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_AS, space, space),
            (resource.RLIMIT_NPROC, lim["max_processes"], lim["max_processes"]),
            (resource.RLIMIT_FSIZE, lim["max_file_size_mb"] * mb, lim["max_file_size_mb"] * mb),
            (resource.RLIMIT_NOFILE, lim["max_open_files"], lim["max_open_files"]),
            (resource.RLIMIT_CORE, 0, 0),
            (resource.RLIMIT_STACK, lim["stack_mb"] * mb, lim["stack_mb"] * mb),
        ]
        for which, soft, hard in settings:
            resource.setrlimit(which, (soft, hard))

    # ---- one run -------------------------------------------------------------
    def run(self, req, blob, fds):
        lim = req["limits"]
        self._prepare_workdir(lim["workdir_size_mb"])
        try:
            self._write_files(req["files"], blob)
            self._set_cgroup_limits(lim)
            oom_before = self._oom_kills()
            started = time.monotonic()
            pid = os.fork()
            if pid == 0:
                self._child(req, fds)
            for fd in fds:
                os.close(fd)
            status, rusage, timed_out, killed = self._wait(pid, started + lim["wall_timeout_s"])
            elapsed = time.monotonic() - started
            clean = self._kill_all()
            fetched = b""
            if req.get("fetch") and status is not None and os.WIFEXITED(status) \
                    and os.WEXITSTATUS(status) == 0:
                try:
                    with open(os.path.join(self.workdir, req["fetch"]), "rb") as fh:
                        fetched = fh.read()
                except OSError:
                    fetched = b""
            report = {
                "op": "result",
                "exit_code": os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None,
                "signal": os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None,
                "elapsed_s": elapsed,
                "cpu_s": (rusage.ru_utime + rusage.ru_stime) if rusage else 0.0,
                "max_rss_kb": rusage.ru_maxrss if rusage else 0,
                "timed_out": timed_out,
                "killed_by_host": killed,
                "oom_kills": self._oom_kills() - oom_before,
                "clean": clean,
                "fetched": bool(fetched),
            }
        finally:
            self._wipe_workdir()
            self._set_cgroup_limits(None)
        return report, fetched

    def _wait(self, pid, deadline):
        """Wait for the child, a host 'kill' frame, or the deadline, whichever comes first.

        A pidfd (Linux >= 5.3) wakes us the moment the child exits; without one we
        poll waitpid every 5 ms.
        """
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        poller = select.poll()
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        poller.register(self.sock.fileno(), select.POLLIN)
        timed_out = killed = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                step = left if pidfd is not None else min(left, 0.005)
                events = dict(poller.poll(max(1, int(step * 1000))))
                if pidfd is None:
                    exited, status, rusage = os.wait4(pid, os.WNOHANG)
                    if exited:
                        return status, rusage, False, False
                elif pidfd in events:
                    break
                if self.sock.fileno() in events:
                    msg, _blob, extra = recv_frame(self.sock)   # EOFError: host gone -> exit
                    for fd in extra:
                        os.close(fd)
                    if msg.get("op") == "kill":
                        killed = True
                        break
        finally:
            if pidfd is not None:
                os.close(pidfd)
        if timed_out or killed:
            self._kill_tree(pid)
        _, status, rusage = os.wait4(pid, 0)
        return status, rusage, timed_out, killed

    def _kill_tree(self, pid):
        if self.pidns:
            os.kill(-1, signal.SIGKILL)
        else:
            for p in [pid] + self._descendants():
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _descendants(self):
        """Pids whose parent chain leads to this server (insecure mode only)."""
        parents = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as fh:
                        parents[int(name)] = int(fh.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        me, found = os.getpid(), []
        for p in parents:
            q, seen = p, 0
            while q in parents and seen < 64:
                q, seen = parents[q], seen + 1
                if q == me:
                    found.append(p)
                    break
        return found

    def _kill_all(self, budget_s=3.0):
        """Kill and reap every process of the run; True when none is left."""
        end = time.monotonic() + budget_s
        while time.monotonic() < end:
            try:
                if self.pidns:
                    os.kill(-1, signal.SIGKILL)
                else:
                    for p in self._descendants():
                        os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                if not self._others_alive():
                    return True
            time.sleep(0.002)
        return not self._others_alive()

    def _others_alive(self):
        if not self.pidns:
            return bool(self._descendants())
        me = os.getpid()
        return any(n.isdigit() and int(n) not in (1, me) for n in os.listdir("/proc"))

    def serve(self):
        send_frame(self.sock, {"op": "ready", "pid": os.getpid()})
        while True:
            try:
                msg, blob, fds = recv_frame(self.sock)
            except EOFError:
                return
            if msg.get("op") != "run":
                for fd in fds:
                    os.close(fd)
                continue
            try:
                report, fetched = self.run(msg, blob, fds)
            except Exception as exc:  # noqa: BLE001 - a sandbox fault becomes a result
                report, fetched = {"op": "error", "message": f"{type(exc).__name__}: {exc}"}, b""
                self._kill_all(1.0)
            send_frame(self.sock, report, fetched)


def _close_from(lowfd):
    """Close every fd >= lowfd: one close_range(2) syscall (Linux 5.9+), else a loop."""
    if _libc.syscall(SYS_CLOSE_RANGE, lowfd, 0xFFFFFFFF, 0) != 0:
        os.closerange(lowfd, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def main():
    cfg = json.loads(sys.argv[1])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _pyrunner  # noqa: F401 - cached in sys.modules for the forked children
    del sys.path[0]
    for name in cfg.get("preimport", []):
        try:
            __import__(name)
        except ImportError:
            pass
    import gc
    gc.collect()
    gc.freeze()   # the children's GC leaves the server's objects alone: fewer copy-on-write faults
    sock = socket.socket(fileno=cfg["control_fd"])
    server = Server(sock, cfg)
    server.join_cgroups()
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "child subreaper")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    server.serve()


if __name__ == "__main__":
    main()
