"""Where rollout groups come from and where new policies are announced.

Two small protocols keep the trainer independent of the transport:
``RolloutSource`` (fetch up to N groups with a timeout; ``ack`` once a
checkpoint records their ids, so a crash redelivers rather than loses them)
and ``PolicyAnnouncer`` (announce a ``PolicyVersion``). Local implementations
live here: an in-memory queue (tests), a directory of msgpack-encoded
``RolloutGroup`` files (``aspo trainer serve``), a logging and a file
announcer. The Redis-streams ones belong to ``services/bus``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec

from services.bus.messages import PolicyVersion, RolloutGroup, decoder, encode

log = logging.getLogger(__name__)


@runtime_checkable
class RolloutSource(Protocol):
    def fetch(self, max_groups: int, timeout_s: float) -> list[RolloutGroup]:
        """Up to ``max_groups`` groups; waits at most ``timeout_s`` for the first one."""
        ...

    def ack(self, group_ids: Sequence[str]) -> None:
        """The groups are durably used (a checkpoint records their rollout ids)."""
        ...


@runtime_checkable
class PolicyAnnouncer(Protocol):
    def announce(self, version: PolicyVersion) -> None:
        """Tell the rest of the system that ``version.path`` is complete and current."""
        ...


class InMemorySource:
    """A thread-safe queue of groups; un-acked groups can be redelivered (tests)."""

    def __init__(self, groups: Sequence[RolloutGroup] = ()) -> None:
        self._queue: queue.Queue[RolloutGroup] = queue.Queue()
        self.pending: dict[str, RolloutGroup] = {}
        self.acked: list[str] = []
        for g in groups:
            self.put(g)

    def put(self, group: RolloutGroup) -> None:
        self._queue.put(group)

    def fetch(self, max_groups: int, timeout_s: float) -> list[RolloutGroup]:
        out: list[RolloutGroup] = []
        try:
            out.append(self._queue.get(timeout=timeout_s))
            while len(out) < max_groups:
                out.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        self.pending.update((g.group_id, g) for g in out)
        return out

    def ack(self, group_ids: Sequence[str]) -> None:
        for gid in group_ids:
            if self.pending.pop(gid, None) is not None:
                self.acked.append(gid)

    def redeliver_pending(self) -> None:
        """Put un-acked groups back, as a broker does after a consumer crash."""
        for g in self.pending.values():
            self._queue.put(g)
        self.pending.clear()


class DirectorySource:
    """Groups as ``*.msgpack`` files in a directory, oldest name first.

    Producers write ``<name>.msgpack.tmp`` and rename (only ``*.msgpack`` is
    read). A fetched file stays in place until acked, then moves to ``done/``;
    after a restart, un-acked files are delivered again (the trainer's
    consumed ids skip what a checkpoint already recorded). A file that fails to
    decode moves to ``rejected/`` with a ``.error`` note: nothing is lost.
    """

    def __init__(self, path: Path, poll_interval_s: float = 0.2) -> None:
        self.path = Path(path)
        self.poll_interval_s = poll_interval_s
        self._decoder = decoder(RolloutGroup)
        self._in_flight: dict[str, Path] = {}
        for sub in ("", "done", "rejected"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def _candidates(self) -> list[Path]:
        taken = set(self._in_flight.values())
        return sorted(p for p in self.path.glob("*.msgpack") if p not in taken)

    def fetch(self, max_groups: int, timeout_s: float) -> list[RolloutGroup]:
        deadline = time.monotonic() + timeout_s
        out: list[RolloutGroup] = []
        while True:
            for p in self._candidates()[: max_groups - len(out)]:
                group = self._read(p)
                if group is not None:
                    self._in_flight[group.group_id] = p
                    out.append(group)
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))

    def _read(self, p: Path) -> RolloutGroup | None:
        try:
            return self._decoder.decode(p.read_bytes())
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            self.reject(p, f"cannot decode RolloutGroup: {err}")
            return None

    def reject(self, p: Path, reason: str) -> None:
        log.error("rejected rollout file %s: %s", p.name, reason)
        target = self.path / "rejected" / p.name
        os.replace(p, target)
        target.with_name(p.name + ".error").write_text(reason + "\n")

    def reject_group(self, group_id: str, reason: str) -> None:
        """Move a fetched group's file to ``rejected/`` (e.g. a malformed sample)."""
        p = self._in_flight.pop(group_id, None)
        if p is not None:
            self.reject(p, reason)

    def ack(self, group_ids: Sequence[str]) -> None:
        for gid in group_ids:
            p = self._in_flight.pop(gid, None)
            if p is not None and p.exists():
                os.replace(p, self.path / "done" / p.name)


def write_group(directory: Path, group: RolloutGroup) -> Path:
    """Producer side of ``DirectorySource``: write atomically (tmp + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{time.time_ns():020d}-{group.group_id}.msgpack"
    tmp = final.with_name(final.name + ".tmp")
    tmp.write_bytes(encode(group))
    os.replace(tmp, final)
    return final


class LoggingAnnouncer:
    """Logs each announcement and remembers them (tests, dry runs)."""

    def __init__(self) -> None:
        self.announced: list[PolicyVersion] = []

    def announce(self, version: PolicyVersion) -> None:
        log.info("policy v%d at %s (trainer step %d)", version.version, version.path, version.trainer_step)
        self.announced.append(version)


class FileAnnouncer:
    """Appends each PolicyVersion as a JSON line to ``<run>/policy/versions.jsonl``
    and atomically rewrites ``<run>/policy/latest.json``."""

    def __init__(self, policy_root: Path) -> None:
        self.policy_root = Path(policy_root)
        self.policy_root.mkdir(parents=True, exist_ok=True)

    def announce(self, version: PolicyVersion) -> None:
        line = json.dumps(msgspec.to_builtins(version))
        with open(self.policy_root / "versions.jsonl", "a") as f:
            f.write(line + "\n")
        tmp = self.policy_root / ".latest.json.tmp"
        tmp.write_text(line + "\n")
        os.replace(tmp, self.policy_root / "latest.json")
        log.info("announced policy v%d (%s)", version.version, version.path)
