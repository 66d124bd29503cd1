"""The bubblewrap command line of a worker: what its sandbox can see and do.

Used by `sandbox.worker.Worker`. The view is read-only and minimal: /usr
(with /usr/local hidden, so the host's pip packages are not visible), the
merged-usr symlinks (/bin, /lib, ...), the few /etc files the dynamic linker,
Python and g++ read, a private /proc and /dev, the fork server script, the
compile cache (read-only) and the worker's own cgroup dirs. Not /root, /home,
/tmp, /work or the service's venv. Namespaces: mount, pid, net (no interfaces
but loopback, down), ipc, uts, cgroup. The environment is cleared.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SERVER_PATH_IN_SANDBOX = "/opt/aspo-sandbox/server.py"
CACHE_DIR_IN_SANDBOX = "/opt/aspo-sandbox/cache"
CGROUP_DIR_IN_SANDBOX = "/opt/aspo-sandbox/cgroup"
WORKDIR_IN_SANDBOX = "/tmp"
NAMESPACES = ("mount", "pid", "net", "ipc", "uts", "cgroup")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
             "python3.11", "python3")
TOP_LEVEL_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What the fork server keeps: mount the per-run tmpfs, drop to the run uid, kill the run.
# (bwrap 0.8 keeps ALL capabilities when CAP_SYS_RESOURCE is added: do not add it.)
SERVER_CAPS = ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN",
               "CAP_DAC_OVERRIDE", "CAP_FOWNER")


def bwrap_version(bwrap: str) -> str:
    """`bwrap --version` output, e.g. "bubblewrap 0.8.0"."""
    out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False)
    return (out.stdout or out.stderr).strip()


def root_view_args(root: Path = Path("/")) -> list[str]:
    """Read-only /usr plus the symlinks / binds that make it a usable root."""
    args = ["--ro-bind", str(root / "usr"), "/usr"]
    if (root / "usr/local").is_dir():
        args += ["--tmpfs", "/usr/local", "--remount-ro", "/usr/local"]
    for name in TOP_LEVEL_LINKS:
        p = root / name
        if p.is_symlink():
            args += ["--symlink", str(p.readlink()), f"/{name}"]
        elif p.is_dir():
            args += ["--ro-bind", str(p), f"/{name}"]
    for name in ETC_FILES:
        p = root / "etc" / name
        if p.exists():
            args += ["--ro-bind", str(p), f"/etc/{name}"]
    return args


def build_command(
    *,
    bwrap: str,
    python: str,
    server_script: Path,
    server_config: str,
    cache_dir: Path,
    cgroup_dirs: dict[str, Path],
) -> list[str]:
    """Full argv that starts one fork server inside its own sandbox."""
    args = [bwrap, *root_view_args()]
    args += ["--proc", "/proc", "--dev", "/dev", "--dir", WORKDIR_IN_SANDBOX]
    args += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/aspo-sandbox"]
    args += ["--ro-bind", str(server_script), SERVER_PATH_IN_SANDBOX]
    args += ["--ro-bind", str(server_script.with_name("_pyrunner.py")),
             SERVER_PATH_IN_SANDBOX.replace("server.py", "_pyrunner.py")]
    args += ["--ro-bind", str(cache_dir), CACHE_DIR_IN_SANDBOX]
    for ctrl, d in cgroup_dirs.items():
        args += ["--bind", str(d), f"{CGROUP_DIR_IN_SANDBOX}/{ctrl}"]
    args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
             "--unshare-cgroup-try", "--hostname", "sandbox",
             "--die-with-parent", "--new-session", "--clearenv",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
             "--cap-drop", "ALL"]
    for cap in SERVER_CAPS:
        args += ["--cap-add", cap]
    args += ["--remount-ro", "/", "--chdir", "/"]
    args += ["--", python, "-I", "-B", SERVER_PATH_IN_SANDBOX, server_config]
    return args
