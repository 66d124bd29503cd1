"""Weaker modes, for real: no cgroups (rlimits + per-worker uid) and no bubblewrap at all."""

from __future__ import annotations

import shutil

import pytest
from sandbox_helpers import PoolDriver, assert_clean, find_marker

from sandbox.protocol import ProcessStatus


@pytest.fixture(scope="module")
def no_cgroups():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap not installed")
    d = PoolDriver(workers=1, cgroup_mode="none", hang_grace_s=2.0)
    yield d
    d.close()


@pytest.fixture(scope="module")
def insecure():
    d = PoolDriver(workers=1, insecure_no_sandbox=True, hang_grace_s=2.0)
    yield d
    d.close()


def test_no_cgroups_report_says_rlimits(no_cgroups):
    rep = no_cgroups.pool.isolation_report()
    assert rep["cgroup_mode"] == "none" and rep["sandbox"] == "bubblewrap"
    assert "RLIMIT_AS" in rep["memory_limit"] and "RLIMIT_NPROC" in rep["pids_limit"]


def test_no_cgroups_memory_bomb_is_memory_exceeded(no_cgroups):
    r = no_cgroups.run(code="x = []\nwhile True:\n    x.append(' ' * (1 << 20))\n", memory_mb=128)
    assert r.run.status == ProcessStatus.memory_exceeded and r.run.memory_exceeded
    assert_clean(no_cgroups)


def test_no_cgroups_fork_bomb_is_stopped_by_the_worker_uid(no_cgroups):
    code = ("import os\nn = 0\nwhile True:\n    try:\n        os.fork() or os.pause()\n        n += 1\n"
            "    except OSError:\n        print('limited at', n); break\n")
    r = no_cgroups.run(code=code, max_processes=16, wall_timeout_s=5)
    assert r.run.stdout.startswith("limited at") and int(r.run.stdout.split()[-1]) < 16
    assert_clean(no_cgroups)


def test_insecure_mode_runs_and_says_so(insecure):
    assert insecure.pool.isolation_report()["sandbox"].startswith("NONE")
    r = insecure.run(code="print(sum(range(10)))")
    assert r.run.status == ProcessStatus.ok and r.run.stdout == "45\n"


def test_insecure_mode_still_kills_timeouts_and_orphans(insecure):
    r = insecure.run(code="while True: pass", wall_timeout_s=0.5)
    assert r.run.timed_out
    code = ("import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        os.execvp('sleep', ['sleep', '4343.21'])\n    os._exit(0)\nos.wait()\nprint('ok')")
    r = insecure.run(code=code, wall_timeout_s=10)
    assert r.run.stdout == "ok\n" and find_marker("4343.21") == []


def test_pools_on_one_host_get_disjoint_run_uids(driver, no_cgroups, insecure):
    held = [d.pool._uids.held for d in (driver, no_cgroups, insecure)]
    flat = [u for uids in held for u in uids]
    assert len(flat) == len(set(flat)) == 4
