"""Bus throughput: publish + consume + ack over Redis streams on loopback, side by side.

What is measured: a producer (``StreamProducer.publish_many``, batches of
``--batch`` messages, one Lua call each) and a consumer
(``StreamConsumer.fetch(count=--batch)`` then one MULTI/EXEC XACK+XDEL per
batch) run concurrently in one asyncio loop, on separate connections, against
a private redis-server (or ``REDIS_URL``). Timed: from the first publish to
the last ack, including encoding, decoding and materialising every token /
log-prob array as numpy (what the trainer needs). The stream is bounded by
``--max-len`` unacked entries, so backpressure is live.

Payload: a RolloutGroup of 16 samples, each 256 prompt + 1,024 completion
tokens with log-probs and per-token versions. Formats: ``msgpack`` = the
production wire format (packed int32/float32 arrays); ``json`` = the same
content as JSON with int/float lists (msgspec's JSON, the fastest Python JSON
we have, so the comparison favours JSON if anything).

Two message granularities: ``group`` (one RolloutGroup per stream entry, the
production layout) and ``sample`` (one RolloutSample per entry). "Rollout
messages/s" below counts RolloutSamples delivered per second in both.

Each case runs once with the private server's AOF (everysec, the default) and
once more on the same server with ``appendonly no``, to show what persistence
costs. A short untimed warm-up precedes every case.

Run: ``.venv/bin/python bench/bus_throughput.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from dataclasses import dataclass

import msgspec
import numpy as np

from services.bus.codec import JSON, MSGPACK, Codec
from services.bus.messages import RolloutGroup, RolloutSample
from services.bus.redis_server import ensure_redis
from services.bus.settings import BusSettings
from services.bus.transport import StreamConsumer, StreamProducer, connect

SAMPLES, PROMPT, COMPLETION = 16, 256, 1024


class JsonSample(msgspec.Struct, frozen=True, kw_only=True):
    """RolloutSample with plain lists: what a JSON wire format carries."""

    rollout_id: str
    prompt_ids: list[int]
    completion_ids: list[int]
    behaviour_logprobs: list[float]
    token_versions: list[int]
    reward: float
    advantage: float
    finish_reason: str = "stop"


class JsonGroup(msgspec.Struct, frozen=True, kw_only=True):
    group_id: str
    task_id: str
    samples: list[JsonSample]
    created_at: float


def make_group(index: int, rng: np.random.Generator) -> RolloutGroup:
    samples = [
        RolloutSample.build(
            rollout_id=f"g{index}/{s}",
            prompt_ids=rng.integers(0, 49_152, PROMPT),
            completion_ids=rng.integers(0, 49_152, COMPLETION),
            behaviour_logprobs=-rng.exponential(1.0, COMPLETION).astype(np.float32),
            token_versions=np.full(COMPLETION, index // 64),
            reward=float(s % 2), advantage=float(s % 2) - 0.5,
        )
        for s in range(SAMPLES)
    ]
    return RolloutGroup(group_id=f"g{index}", task_id=f"t{index}", samples=samples)


def to_json_sample(s: RolloutSample) -> JsonSample:
    return JsonSample(
        rollout_id=s.rollout_id, prompt_ids=s.prompt.tolist(), completion_ids=s.completion.tolist(),
        behaviour_logprobs=s.logprobs.tolist(), token_versions=s.versions.tolist(),
        reward=s.reward, advantage=s.advantage, finish_reason=s.finish_reason,
    )


def to_json_group(g: RolloutGroup) -> JsonGroup:
    return JsonGroup(group_id=g.group_id, task_id=g.task_id,
                     samples=[to_json_sample(s) for s in g.samples], created_at=g.created_at)


def use_sample(s: RolloutSample | JsonSample) -> int:
    """Materialise the arrays as the trainer would; returns the token count."""
    if isinstance(s, RolloutSample):
        arrays = (s.prompt, s.completion, s.logprobs, s.versions)
    else:
        arrays = (np.asarray(s.prompt_ids, np.int32), np.asarray(s.completion_ids, np.int32),
                  np.asarray(s.behaviour_logprobs, np.float32),
                  np.asarray(s.token_versions, np.int32))
    return int(arrays[1].size)


@dataclass
class Result:
    name: str
    entries: int
    samples: int
    payload_bytes: int
    seconds: float


async def run_case(url: str, name: str, messages: list, kind: type, codec: Codec,
                   batch: int, max_len: int) -> Result:
    stream = f"bench:{name}:{uuid.uuid4().hex[:8]}"
    producer_redis, consumer_redis = connect(url), connect(url)
    consumer = StreamConsumer(consumer_redis, stream, "trainer", "c0", kind, codec=codec,
                              reclaim_interval_ms=600_000)
    await consumer.ensure_group()
    producer = StreamProducer(producer_redis, stream, max_len=max_len, codec=codec)
    payload_bytes = sum(len(codec.encode(m)) for m in messages[:20]) * len(messages) // min(20, len(messages))

    async def produce() -> None:
        for i in range(0, len(messages), batch):
            await producer.publish_many(messages[i:i + batch])

    async def consume() -> int:
        samples, entries = 0, 0
        while entries < len(messages):
            got = await consumer.fetch(count=batch, block_ms=1_000)
            for d in got:
                parts = d.message.samples if hasattr(d.message, "samples") else [d.message]
                samples += sum(1 for s in parts if use_sample(s))
            entries += len(got)
            await consumer.ack([d.entry_id for d in got])
        return samples

    start = time.perf_counter()
    _, samples = await asyncio.gather(produce(), consume())
    seconds = time.perf_counter() - start
    await consumer_redis.delete(stream)
    await producer_redis.aclose()
    await consumer_redis.aclose()
    return Result(name, len(messages), samples, payload_bytes, seconds)


def report(results: list[Result]) -> None:
    print("| case | entries | rollout samples | payload MB | s | entries/s | samples/s | MB/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        mb = r.payload_bytes / 1e6
        print(f"| {r.name} | {r.entries} | {r.samples} | {mb:.0f} | {r.seconds:.2f} | "
              f"{r.entries / r.seconds:,.0f} | {r.samples / r.seconds:,.0f} | {mb / r.seconds:,.0f} |")
    by = {r.name: r for r in results}
    for b in results:
        j = by.get(b.name.replace("/msgpack", "/json"))
        if "/msgpack" in b.name and j:
            speed = (b.samples / b.seconds) / (j.samples / j.seconds)
            size = (j.payload_bytes / j.entries) / (b.payload_bytes / b.entries)
            print(f"{b.name}: msgpack/JSON samples/s {speed:.2f}x; JSON payload {size:.2f}x larger")
    best = max(results, key=lambda r: r.samples / r.seconds)
    verdict = "meets" if best.samples / best.seconds >= 10_000 else "misses"
    print(f"best: {best.name} {best.samples / best.seconds:,.0f} rollout samples/s ({verdict} the "
          "10,000/s target)")


async def run_all(url: str, groups: list[RolloutGroup], json_groups: list[JsonGroup],
                  batch: int, max_len: int, suffix: str = "") -> list[Result]:
    samples = [s for g in groups for s in g.samples]
    json_samples = [s for g in json_groups for s in g.samples]
    cases = [
        ("group/msgpack", groups, RolloutGroup, MSGPACK, batch),
        ("group/json", json_groups, JsonGroup, JSON, batch),
        ("sample/msgpack", samples, RolloutSample, MSGPACK, batch * SAMPLES),
        ("sample/json", json_samples, JsonSample, JSON, batch * SAMPLES),
    ]
    results = []
    for name, messages, kind, codec, n in cases:
        bound = max(max_len, n)
        await run_case(url, "warmup", messages[: 2 * n], kind, codec, n, bound)
        results.append(await run_case(url, name + suffix, messages, kind, codec, n, bound))
    return results


async def main(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    groups = [make_group(i, rng) for i in range(max(1, args.groups))]
    json_groups = [to_json_group(g) for g in groups]
    size = len(MSGPACK.encode(groups[0]))
    print(f"one group: {SAMPLES} x ({PROMPT} prompt + {COMPLETION} completion) tokens; "
          f"msgpack {size / 1e3:.0f} KB, JSON {len(JSON.encode(json_groups[0])) / 1e3:.0f} KB; "
          f"median of {args.repeat} interleaved rounds; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    settings = BusSettings(url=os.environ.get("REDIS_URL"))
    rounds: list[list[Result]] = []
    with tempfile.TemporaryDirectory() as run_dir, ensure_redis(run_dir, settings) as handle:
        aof = settings.url is None
        admin = connect(handle.url)
        for _ in range(args.repeat):  # interleaved, so load changes hit every case alike
            if aof:
                await admin.config_set("appendonly", "yes")
            results = await run_all(handle.url, groups, json_groups, args.batch, args.max_len,
                                    " (AOF everysec)" if aof else "")
            if aof and not args.skip_no_aof:
                # Same server with persistence off: the share of time that is the AOF's write.
                await admin.config_set("appendonly", "no")
                results += await run_all(handle.url, groups, json_groups, args.batch,
                                         args.max_len, " (no AOF)")
            rounds.append(results)
        await admin.aclose()
    report([median_result([r[i] for r in rounds]) for i in range(len(rounds[0]))])
    print(f"load average {os.getloadavg()[0]:.1f} at the end (other work on the machine "
          "slows every case alike; compare ratios across runs, not absolute rates)")


def median_result(runs: list[Result]) -> Result:
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=600, help="RolloutGroups per case")
    parser.add_argument("--batch", type=int, default=16, help="groups per publish/fetch/ack")
    parser.add_argument("--max-len", type=int, default=256, help="stream bound (backpressure)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--quick", action="store_true", help="a 100-group smoke run")
    parser.add_argument("--skip-no-aof", action="store_true",
                        help="skip the second pass with AOF persistence switched off")
    ns = parser.parse_args()
    if ns.quick:
        ns.groups, ns.repeat = 100, 1
    asyncio.run(main(ns))
