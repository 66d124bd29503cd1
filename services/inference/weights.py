"""Live weight updates of every vLLM replica from a published safetensors dir.

Who calls it: the orchestrator (or ``aspo run``) when the trainer publishes
policy version ``v`` at ``path``. Protocol per replica (vLLM dev-mode HTTP):

1. ``POST /pause?mode=keep`` - the scheduler freezes; in-flight requests stay
   queued with their KV cache instead of being aborted;
2. ``POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": path}}``
   - in-place reload on every worker;
3. ``POST /update_weight_version {"new_version": "v"}`` - tokens sampled from
   now on are labelled ``v`` in the ``weight_versions`` spans, so a rollout
   that straddles the update records which tokens came from which version
   (the trainer's off-policy correction needs this);
4. ``POST /resume`` - always, even when a step failed.

Consistency: the dir is validated first (:mod:`.checkpoint`; nothing is touched
when it is bad). If some replicas fail, ``on_failure="rollback"`` (default)
reloads the previous dir on every replica that changed or failed, so all
serve the previous version; ``"evict"`` keeps the new version on the
replicas that took it and takes the failed ones out of rotation. A replica
that cannot be brought to a known version either way is taken out of
rotation. The result says per replica what happened.

Not here: the NCCL/GPU push path, see :mod:`.nccl_sync`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Literal

import httpx

from services.inference.checkpoint import TensorSpec, check_compatible, read_checkpoint
from services.inference.protocol import ReplicaUpdate, WeightUpdateResult
from services.inference.replicas import NoReplicaAvailable, Replica, ReplicaPool
from services.inference.settings import InferenceClientSettings

FailurePolicy = Literal["rollback", "evict"]


class ReplicaStepError(RuntimeError):
    """One HTTP step of the protocol failed on one replica."""


class WeightUpdater:
    """Serialises weight updates over a :class:`ReplicaPool` and tracks what each replica serves."""

    def __init__(
        self,
        pool: ReplicaPool,
        settings: InferenceClientSettings | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings or InferenceClientSettings()
        self.http = http or httpx.AsyncClient(timeout=self.settings.weight_update_timeout_s)
        self._lock = asyncio.Lock()
        self._served_specs: dict[str, dict[str, TensorSpec]] = {}

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _post(
        self,
        replica: Replica,
        path: str,
        params: dict[str, str] | None = None,
        json: dict[str, object] | None = None,
    ) -> httpx.Response:
        try:
            resp = await self.http.post(f"{replica.url}{path}", params=params, json=json)
        except httpx.TransportError as err:
            raise ReplicaStepError(f"{replica.url}{path}: {err!r}") from None
        if resp.status_code != 200:
            raise ReplicaStepError(
                f"{replica.url}{path} answered {resp.status_code}: {resp.text[:400]}"
            )
        return resp

    async def sync_state(self) -> None:
        """Learn each replica's served version and weights dir (GET /weight_info, /v1/models)."""
        for r in self.pool.replicas:
            try:
                info = (await self.http.get(f"{r.url}/weight_info")).json()
                models = (await self.http.get(f"{r.url}/v1/models")).json()
            except (httpx.TransportError, ValueError) as err:
                self.pool.mark_down(r, f"sync_state: {err!r}")
                continue
            label = info.get("weight_version")
            r.version = 0 if label in (None, "default") else int(label)
            if r.weights_path is None and models.get("data"):
                r.weights_path = models["data"][0].get("root")

    async def _load(self, replica: Replica, version: int, path: str) -> tuple[float, float]:
        """pause(keep) -> reload -> tag version -> resume; returns (paused_s, reload_s).
        Resume runs even when a step fails, so no replica is left paused."""
        t0 = time.perf_counter()
        await self._post(replica, "/pause", params={"mode": "keep"})
        reload_s = 0.0
        try:
            t1 = time.perf_counter()
            await self._post(
                replica,
                "/collective_rpc",
                json={"method": "reload_weights", "kwargs": {"weights_path": path}},
            )
            reload_s = time.perf_counter() - t1
            await self._post(replica, "/update_weight_version", json={"new_version": str(version)})
        finally:
            await self._post(replica, "/resume")
        return time.perf_counter() - t0, reload_s

    async def _update_one(self, replica: Replica, version: int, path: str) -> ReplicaUpdate:
        try:
            paused_s, reload_s = await self._load(replica, version, path)
        except ReplicaStepError as err:
            return ReplicaUpdate(
                url=replica.url,
                ok=False,
                version=replica.version,
                path=replica.weights_path,
                error=str(err),
            )
        replica.version, replica.weights_path = version, path
        return ReplicaUpdate(
            url=replica.url,
            ok=True,
            version=version,
            path=path,
            paused_s=paused_s,
            reload_s=reload_s,
        )

    async def _restore(
        self, replica: Replica, version: int | None, path: str | None, outcome: ReplicaUpdate
    ) -> ReplicaUpdate:
        """Reload the previous dir; if impossible, take the replica out of rotation."""
        if version is not None and path is not None:
            try:
                await self._load(replica, version, path)
                replica.version, replica.weights_path = version, path
                return outcome.model_copy(
                    update={"version": version, "path": path, "rolled_back": True}
                )
            except ReplicaStepError as err:
                outcome = outcome.model_copy(
                    update={"error": f"{outcome.error or ''}; roll-back: {err}"}
                )
        self.pool.take_out_of_rotation(
            replica, outcome.error or "unknown weights after failed update"
        )
        replica.version = replica.weights_path = None
        return outcome.model_copy(update={"version": None, "path": None, "in_rotation": False})

    def _check_against_served(self, path: str, targets: list[Replica]) -> None:
        """Validate ``path`` and compare it with what is served. Served dirs' tensor specs
        are remembered, so a trainer that prunes old checkpoints does not block updates
        (a served dir that is gone, or a hub id, is skipped)."""
        new_tensors = read_checkpoint(path)
        served = {r.weights_path for r in targets if r.weights_path}
        for old_path in served:
            old = self._served_specs.get(old_path)
            if old is None and Path(old_path).is_dir():
                old = self._served_specs[old_path] = read_checkpoint(old_path)
            if old is not None:
                check_compatible(new_tensors, old, where=str(path))
        self._served_specs = {p: self._served_specs[p] for p in served if p in self._served_specs}
        self._served_specs[str(path)] = new_tensors

    async def update_weights(
        self, version: int, path: str, on_failure: FailurePolicy = "rollback"
    ) -> WeightUpdateResult:
        """Load ``path`` as policy ``version`` on every in-rotation replica (see module doc).

        Raises :class:`.checkpoint.CheckpointError` before touching any replica when the
        dir is bad. Keep the served dir until this returns: a roll-back reloads it.
        """
        async with self._lock:
            return await self._update_weights(version, path, on_failure)

    async def _update_weights(
        self, version: int, path: str, on_failure: FailurePolicy
    ) -> WeightUpdateResult:
        t0 = time.perf_counter()
        if version < 0:
            raise ValueError(f"policy version must be >= 0, got {version}")
        targets = [r for r in self.pool.replicas if r.in_rotation]
        if not targets:
            raise NoReplicaAvailable("no inference replica in rotation to update")
        if any(r.version is None or r.weights_path is None for r in targets):
            await self.sync_state()
        self._check_against_served(path, targets)
        previous = {r.url: (r.version, r.weights_path) for r in targets}
        outcomes = list(
            await asyncio.gather(*(self._update_one(r, version, path) for r in targets))
        )
        failed = [o for o in outcomes if not o.ok]
        error = None
        if failed:
            error = "; ".join(o.error or "?" for o in failed)
            restore = outcomes if on_failure == "rollback" else failed
            fixed = await asyncio.gather(
                *(self._restore(self.pool.get(o.url), *previous[o.url], o) for o in restore)
            )
            by_url = {o.url: o for o in fixed}
            outcomes = [by_url.get(o.url, o) for o in outcomes]
        live_versions = {o.version for o in outcomes if o.in_rotation}
        consistent = len(live_versions) == 1 and None not in live_versions
        return WeightUpdateResult(
            version=version,
            path=str(path),
            ok=not failed,
            consistent=consistent,
            served_version=next(iter(live_versions)) if consistent else None,
            total_s=time.perf_counter() - t0,
            max_paused_s=max((o.paused_s for o in outcomes), default=0.0),
            replicas=outcomes,
            error=error,
        )


async def update_weights(
    version: int, path: str, base_urls: list[str], on_failure: FailurePolicy = "rollback"
) -> WeightUpdateResult:
    """One-shot helper: update every replica in ``base_urls`` (no state kept between calls)."""
    updater = WeightUpdater(ReplicaPool(base_urls))
    try:
        return await updater.update_weights(version, path, on_failure)
    finally:
        await updater.aclose()
