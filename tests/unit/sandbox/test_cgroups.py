"""cgroup hierarchy detection from /proc text: v1, v2, mixed, none."""

from pathlib import Path

from sandbox.cgroups import CgroupManager, Hierarchy, parse_hierarchy

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


def fake_v2_root(base: Path, tag: str, delegated: str) -> None:
    """What the kernel shows in a new v2 cgroup: the controllers its parent delegates."""
    (base / tag).mkdir(parents=True)
    (base / tag / "cgroup.controllers").write_text(delegated + "\n")
    (base / tag / "cgroup.subtree_control").write_text("")


def test_v2_with_delegated_controllers_is_used(tmp_path):
    fake_v2_root(tmp_path, "pool", "cpu memory pids")
    m = CgroupManager("auto", Hierarchy(v1={}, v2=tmp_path), tag="pool")
    assert m.version == "v2" and set(m.roots) == {"memory", "pids"}
    assert "memory.max" in m.mechanism("memory") and "pids.max" in m.mechanism("pids")
    assert (tmp_path / "pool" / "cgroup.subtree_control").read_text() in ("+memory", "+pids")
    dirs = m.create_worker("w0g1")
    assert dirs == {"memory": tmp_path / "pool/w0g1", "pids": tmp_path / "pool/w0g1"}


def test_v2_without_delegation_falls_back_and_cleans_up(tmp_path):
    fake_v2_root(tmp_path, "pool", "cpu io")
    (tmp_path / "pool" / "cgroup.controllers").unlink()   # a plain dir can be removed again
    (tmp_path / "pool" / "cgroup.subtree_control").unlink()
    m = CgroupManager("auto", Hierarchy(v1={}, v2=tmp_path), tag="pool")
    assert m.version == "none" and m.roots == {} and m.mechanism("memory") is None
    assert not (tmp_path / "pool").exists()


def test_v1_without_the_controller_files_is_not_used(tmp_path):
    m = CgroupManager("auto", Hierarchy(v1={"memory": tmp_path / "mem"}, v2=None), tag="pool")
    assert m.version == "none" and not (tmp_path / "mem" / "pool").exists()


def test_mode_none_touches_nothing(tmp_path):
    fake_v2_root(tmp_path, "pool", "memory pids")
    m = CgroupManager("none", Hierarchy(v1={}, v2=tmp_path), tag="pool")
    assert m.roots == {} and m.version == "none"
