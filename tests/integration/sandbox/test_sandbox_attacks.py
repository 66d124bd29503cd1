"""Adversarial programs: each must fail safely, quickly, and leave nothing behind.

`sbx` checks after every test that each worker is back to bwrap + init +
fork server with empty cgroups (see conftest.assert_clean).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from sandbox_helpers import SECRET, find_marker, proc_state

from sandbox.protocol import ExecutionLimits, ProcessStatus, RunRequest


def test_fork_bomb_is_contained(sbx):
    code = ("import os\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n")
    r = sbx.run(code=code, wall_timeout_s=2, max_processes=32)
    assert r.run.status in (ProcessStatus.timeout, ProcessStatus.nonzero_exit, ProcessStatus.signaled)
    assert sbx.run(code="print('alive')").run.stdout == "alive\n"


def test_python_memory_bomb_is_memory_exceeded(sbx):
    code = "x = []\nwhile True:\n    x.append(' ' * (1 << 20))\n"
    r = sbx.run(code=code, memory_mb=128, wall_timeout_s=10)
    assert r.run.status == ProcessStatus.memory_exceeded and r.run.memory_exceeded


def test_cpp_malloc_loop_is_memory_exceeded(sbx):
    code = ("#include <cstdlib>\n#include <cstring>\nint main(){ for(;;){ char*p=(char*)malloc(1<<20);"
            " if(!p) return 3; memset(p, 1, 1<<20);} }")
    r = sbx.run(language="cpp", code=code, memory_mb=128, wall_timeout_s=10)
    assert r.run.status == ProcessStatus.memory_exceeded and r.run.memory_exceeded


def test_endless_output_is_truncated_not_timeout(sbx):
    r = sbx.run(code="while True:\n    print('spam' * 100)\n", wall_timeout_s=20,
                max_output_bytes=64 << 10)
    assert r.run.stdout_truncated and not r.run.timed_out
    assert r.run.status == ProcessStatus.signaled
    assert len(r.run.stdout.encode()) == 64 << 10


def test_endless_stderr_is_truncated(sbx):
    r = sbx.run(language="cpp", code="#include <cstdio>\nint main(){for(;;) fputs(\"err\\n\", stderr);}",
                wall_timeout_s=20, max_output_bytes=4096)
    assert r.run.stderr_truncated and not r.run.timed_out and len(r.run.stderr) == 4096


def test_network_is_unreachable(sbx):
    code = """
import socket
for target in [("127.0.0.1", 22), ("127.0.0.1", 6379), ("1.1.1.1", 53)]:
    try:
        socket.create_connection(target, timeout=1)
        print("CONNECTED", target)
    except OSError as e:
        print("blocked", type(e).__name__)
try:
    print("RESOLVED", socket.getaddrinfo("pypi.org", 443))
except OSError as e:
    print("dns blocked")
import os
print(sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else "no sysfs")
"""
    out = sbx.run(code=code, wall_timeout_s=10).run.stdout
    assert "CONNECTED" not in out and "RESOLVED" not in out
    assert out.count("blocked") == 4


def test_host_files_and_environment_are_invisible(sbx):
    code = """
import os
for path in ["/root", "/home", "/work/main", "/etc/shadow", "/etc/passwd", "/sys", "/var",
             "/root/.pyenv", "/usr/local/lib"]:
    try:
        print(path, "LISTED" if os.path.isdir(path) and os.listdir(path) else
              ("READ" if open(path, "rb").read() else "empty"))
    except OSError as e:
        print(path, "denied", type(e).__name__)
print("ENV", dict(os.environ))
try:
    print("PID1ENV", open("/proc/1/environ", "rb").read())
except OSError:
    print("pid1 env denied")
"""
    out = sbx.run(code=code).run.stdout
    assert "LISTED" not in out and "READ" not in out, out
    assert SECRET not in out and "ASPO_TEST_SECRET" not in out
    assert "VIRTUAL_ENV" not in out and "/work/main" not in out.split("ENV", 1)[1]


def test_writes_outside_the_work_dir_fail(sbx):
    code = """
import os
for path in ["/x", "/usr/x", "/opt/x", "/etc/x", "/dev/shm/x", "/dev/x", "/opt/aspo-sandbox/cache/x",
             "/opt/aspo-sandbox/cgroup/memory/memory.limit_in_bytes", "/proc/sys/kernel/hostname"]:
    try:
        with open(path, "w") as f:
            f.write("1")
        print("WROTE", path)
    except OSError as e:
        print("denied", path)
open("ok.txt", "w").write("fine")
print(open("/tmp/ok.txt").read())
"""
    out = sbx.run(code=code).run.stdout
    assert "WROTE" not in out and out.endswith("fine\n"), out


def test_nothing_persists_between_runs(sbx):
    for _ in range(3):   # FIFO over two workers: both see a write and a later read
        r = sbx.run(code="open('/tmp/persist', 'w').write('x'); import os; os.mkdir('d')")
        assert r.run.status == ProcessStatus.ok
    for _ in range(3):
        r = sbx.run(code="import os; print(os.listdir('.'), os.path.exists('/tmp/persist'))")
        assert r.run.stdout == "['main.py'] False\n"


def test_killing_the_parent_fails_and_workers_survive(sbx):
    r = sbx.run(code="import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('still here')")
    assert r.run.status == ProcessStatus.nonzero_exit and "PermissionError" in r.run.stderr
    # kill(-1) reaches only the run's own uid: not the server, not other workers.
    r = sbx.run(code="import os, signal\nif os.fork() == 0:\n    import time; time.sleep(30)\n"
                "os.kill(-1, signal.SIGKILL)\nprint(os.waitpid(-1, 0)[1])")
    assert r.run.status == ProcessStatus.ok and r.run.stdout == "9\n"
    r = sbx.run(language="cpp", code="#include <signal.h>\n#include <cstdio>\n"
                "int main(){ printf(\"%d %d\", kill(1, SIGKILL), kill(-1, SIGKILL)); }")
    assert r.run.status == ProcessStatus.ok and r.run.stdout == "-1 0"
    for _ in range(3):
        assert sbx.run(code="print(6 * 7)").run.stdout == "42\n"


def test_dead_or_stopped_fork_server_is_replaced(sbx):
    """A server killed (SIGKILL) or stopped (SIGSTOP) mid-run: a result, then a fresh worker."""
    restarts = sbx.pool.stats()["restarts"]
    servers = [w.process_ids()[2] for w in sbx.pool._workers]
    old_trees = [p for w in sbx.pool._workers for p in w.process_ids()]

    async def attack_during_runs():
        reqs = [RunRequest(language="python", code="import time; time.sleep(30)",
                           limits=ExecutionLimits(wall_timeout_s=2)) for _ in servers]
        runs = asyncio.gather(*(sbx.pool.run(r) for r in reqs))
        await asyncio.sleep(0.3)
        os.kill(servers[0], signal.SIGKILL)
        os.kill(servers[1], signal.SIGSTOP)   # hung: noticed after wall limit + hang_grace_s
        return await asyncio.wait_for(runs, 30)

    results = sbx.loop.run_until_complete(attack_during_runs())
    assert [r.run.status for r in results] == [ProcessStatus.sandbox_error] * 2, results
    sbx.settle()
    assert sbx.pool.stats()["restarts"] == restarts + 2
    assert all(w.process_ids()[2] not in servers for w in sbx.pool._workers)
    # Gone, or a zombie bwrap init that the outer bwrap left for the host's pid 1 to reap.
    left = [p for p in old_trees if proc_state(p) not in ("gone", "Z")]
    assert left == [], [Path(f"/proc/{p}/stat").read_text() for p in left]
    for _ in range(2):
        assert sbx.run(code="print('fresh')").run.stdout == "fresh\n"


def test_setsid_double_fork_orphan_is_gone(sbx):
    code = """
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "4242.123"])
    os._exit(0)
os.wait()
print("parent done")
"""
    r = sbx.run(code=code, wall_timeout_s=10)
    assert r.run.status == ProcessStatus.ok and r.run.stdout == "parent done\n"
    assert not r.run.timed_out
    assert find_marker("4242.123") == []


def test_disk_filling_is_bounded(sbx):
    code = """
import errno
n = 0
try:
    with open("big", "wb") as f:
        while True:
            f.write(b"\\0" * (1 << 20)); f.flush(); n += 1
except OSError as e:
    print(errno.errorcode[e.errno], n)
"""
    r = sbx.run(code=code, workdir_size_mb=16, max_file_size_mb=64)
    code_name, megabytes = r.run.stdout.split()
    assert code_name == "ENOSPC" and int(megabytes) <= 16
    r = sbx.run(code=code, workdir_size_mb=64, max_file_size_mb=2)
    code_name, megabytes = r.run.stdout.split()
    assert code_name == "EFBIG" and int(megabytes) == 2


def test_infinite_loop_times_out_near_the_wall_limit(sbx):
    r = sbx.run(code="while True:\n    pass\n", wall_timeout_s=1.0, cpu_time_s=60)
    assert r.run.status == ProcessStatus.timeout and r.run.timed_out
    assert 1.0 <= r.run.execution_time_s < 3.0
    r = sbx.run(code="import time; time.sleep(100)", wall_timeout_s=0.5)
    assert r.run.timed_out and r.run.execution_time_s < 2.5


def test_cpu_time_limit(sbx):
    r = sbx.run(language="cpp", code="int main(){ volatile unsigned long x = 0; for(;;) x++; }",
                cpu_time_s=1, wall_timeout_s=30)
    assert r.run.status == ProcessStatus.timeout and r.run.timed_out
    assert "CPU" in r.run.message


def test_fork_server_cannot_be_inspected_or_stopped(sbx):
    code = """
import os, signal
server = os.getppid()
for path in [f"/proc/{server}/mem", f"/proc/{server}/environ", f"/proc/{server}/maps"]:
    try:
        open(path, "rb").read(1)
        print("READ", path)
    except OSError:
        print("denied")
for sig in (signal.SIGSTOP, signal.SIGTERM):
    try:
        os.kill(server, sig)
        print("SIGNALLED")
    except PermissionError:
        print("denied")
"""
    r = sbx.run(code=code)
    assert r.run.stdout == "denied\n" * 5, r.run.stdout
    assert sbx.run(code="print('ok')").run.stdout == "ok\n"
