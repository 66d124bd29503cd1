"""cgroup hierarchy detection from /proc text: v1, v2, mixed, none."""

from pathlib import Path

from sandbox.cgroups import parse_hierarchy

V1_MOUNTS = """tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V1_SELF = """9:name=systemd:/
8:pids:/
4:memory:/process_api/b677
1:cpu:/
0::/
"""


def test_v1_controllers_nest_under_our_own_cgroup():
    h = parse_hierarchy(V1_MOUNTS, V1_SELF)
    assert h.v1["memory"] == Path("/sys/fs/cgroup/memory/process_api/b677")
    assert h.v1["pids"] == Path("/sys/fs/cgroup/pids")
    assert h.v2 == Path("/sys/fs/cgroup/unified")


def test_pure_v2():
    h = parse_hierarchy("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n",
                        "0::/system.slice/reward.service\n")
    assert h.v1 == {} and h.v2 == Path("/sys/fs/cgroup/system.slice/reward.service")


def test_no_cgroups_at_all():
    h = parse_hierarchy("proc /proc proc rw 0 0\n", "")
    assert h.v1 == {} and h.v2 is None


def test_comounted_v1_controllers():
    mounts = "cgroup /sys/fs/cgroup/memory,pids cgroup rw,memory,pids 0 0\n"
    h = parse_hierarchy(mounts, "5:memory,pids:/a/b\n")
    assert h.v1 == {"memory": Path("/sys/fs/cgroup/memory,pids/a/b"),
                    "pids": Path("/sys/fs/cgroup/memory,pids/a/b")}
