"""cgroup detection and per-worker cgroups (memory and pids controllers).

Used by `sandbox.pool.SandboxPool`: each worker gets its own memory and pids
cgroup, bound read-write into its sandbox so the fork server can set the
run's limits and move each run's child into them. The host also uses them as a
safety net: after a worker is discarded, every pid still listed in its
`cgroup.procs` is killed.

Works with the legacy v1 hierarchy (one mount per controller, e.g.
/sys/fs/cgroup/memory), the unified v2 hierarchy (needs the controllers
delegated to our cgroup), a mix, or none at all (containers): each controller
is resolved on its own, nested under the cgroup this process already runs in,
and `report()` says which mechanism is in force. Without a controller the
pool falls back to rlimits (see docs/security.md).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
CONTROLLERS = ("memory", "pids")


@dataclass(frozen=True)
class Hierarchy:
    """Where our own cgroup is, per controller: (version, directory of our cgroup)."""

    v1: dict[str, Path] = field(default_factory=dict)
    v2: Path | None = None


def parse_hierarchy(mounts: str, proc_cgroup: str) -> Hierarchy:
    """From /proc/self/mounts and /proc/self/cgroup text, locate our cgroup per hierarchy."""
    v1_mounts: dict[str, Path] = {}
    v2_mount: Path | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mountpoint, fstype, opts = parts[1], parts[2], parts[3].split(",")
        if fstype == "cgroup":
            for ctrl in CONTROLLERS:
                if ctrl in opts:
                    v1_mounts[ctrl] = Path(mountpoint)
        elif fstype == "cgroup2" and v2_mount is None:
            v2_mount = Path(mountpoint)
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in proc_cgroup.splitlines():
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        rel = path.lstrip("/")
        if hid == "0" and ctrls == "" and v2_mount is not None:
            v2 = v2_mount / rel
        for ctrl in ctrls.split(","):
            if ctrl in v1_mounts:
                v1[ctrl] = v1_mounts[ctrl] / rel
    return Hierarchy(v1=v1, v2=v2)


class CgroupManager:
    """Creates the pool's cgroup subtree and one cgroup per worker instance."""

    def __init__(self, mode: str = "auto", hierarchy: Hierarchy | None = None,
                 tag: str | None = None) -> None:
        """`hierarchy` defaults to this process's (from /proc); tests pass their own."""
        self.mode = mode
        self.roots: dict[str, tuple[str, Path]] = {}   # controller -> (version, pool root dir)
        self._tag = tag or f"aspo-sandbox-{os.getpid()}-{secrets.token_hex(3)}"
        if mode != "none":
            self._setup(hierarchy)

    def _setup(self, hier: Hierarchy | None) -> None:
        if hier is None:
            try:
                hier = parse_hierarchy(Path("/proc/self/mounts").read_text(),
                                       Path("/proc/self/cgroup").read_text())
            except OSError as exc:
                log.warning("cannot read cgroup info (%s): falling back to rlimits", exc)
                return
        for ctrl in CONTROLLERS:
            if self.mode in ("auto", "v1") and ctrl in hier.v1:
                root = self._make_v1(hier.v1[ctrl], ctrl)
                if root is not None:
                    self.roots[ctrl] = ("v1", root)
                    continue
            if self.mode in ("auto", "v2") and hier.v2 is not None:
                root = self._make_v2(hier.v2, ctrl)
                if root is not None:
                    self.roots[ctrl] = ("v2", root)

    def _make_v1(self, base: Path, ctrl: str) -> Path | None:
        root = base / self._tag
        try:
            root.mkdir(exist_ok=True)
            probe = "memory.limit_in_bytes" if ctrl == "memory" else "pids.max"
            if not (root / probe).exists():
                raise OSError(f"{probe} missing")
            return root
        except OSError as exc:
            log.info("cgroup v1 %s unusable at %s: %s", ctrl, base, exc)
            _rmdir(root)
            return None

    def _make_v2(self, base: Path, ctrl: str) -> Path | None:
        root = base / self._tag
        try:
            root.mkdir(exist_ok=True)
            if ctrl not in (root / "cgroup.controllers").read_text().split():
                raise OSError(f"controller {ctrl} not delegated to {base}")
            (root / "cgroup.subtree_control").write_text(f"+{ctrl}")
            return root
        except OSError as exc:
            log.info("cgroup v2 %s unusable at %s: %s", ctrl, base, exc)
            if not any(v == "v2" and r == root for v, r in self.roots.values()):
                _rmdir(root)
            return None

    @property
    def version(self) -> str:
        versions = {v for v, _ in self.roots.values()}
        if not versions:
            return "none"
        return versions.pop() if len(versions) == 1 else "mixed"

    def mechanism(self, ctrl: str) -> str | None:
        if ctrl not in self.roots:
            return None
        version = self.roots[ctrl][0]
        if ctrl == "memory":
            return ("cgroup v1 memory.limit_in_bytes (+memsw)" if version == "v1"
                    else "cgroup v2 memory.max (swap.max=0)")
        return f"cgroup {version} pids.max"

    def create_worker(self, name: str) -> dict[str, Path]:
        """Fresh cgroup dirs for one worker instance (a replaced worker gets new ones)."""
        dirs: dict[str, Path] = {}
        for ctrl, (_version, root) in self.roots.items():
            d = root / name
            d.mkdir(exist_ok=d in dirs.values())   # v2: one dir serves both controllers
            dirs[ctrl] = d
        return dirs

    @staticmethod
    def pids_in(dirs: dict[str, Path]) -> set[int]:
        pids: set[int] = set()
        for d in dirs.values():
            try:
                pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return pids

    def kill_and_remove(self, dirs: dict[str, Path], budget_s: float = 3.0) -> bool:
        """SIGKILL every process left in the worker's cgroups, then remove them."""
        end = time.monotonic() + budget_s
        while time.monotonic() < end:
            pids = self.pids_in(dirs)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        ok = True
        for d in dirs.values():
            ok = _rmdir(d, budget_s=max(0.0, end - time.monotonic())) and ok
        return ok

    def close(self) -> None:
        for _version, root in self.roots.values():
            for child in root.iterdir() if root.exists() else []:
                if child.is_dir():
                    self.kill_and_remove({"x": child}, budget_s=1.0)
            _rmdir(root)
        self.roots.clear()


def _rmdir(path: Path, budget_s: float = 1.0) -> bool:
    """rmdir a cgroup (EBUSY while exiting tasks linger: retry briefly)."""
    end = time.monotonic() + budget_s
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
