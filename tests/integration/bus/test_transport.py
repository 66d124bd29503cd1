"""Work queue and broadcast over a real redis-server: round trips, backpressure, poison."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.bus.broadcast import Broadcaster, BroadcastReader
from services.bus.messages import MetricEvent, PolicyVersion, RolloutGroup, RolloutSample, encode
from services.bus.transport import (
    JSON,
    BackpressureTimeout,
    PublishCancelled,
    StreamConsumer,
    StreamProducer,
    connect,
)


def _assert_groups_equal(a: RolloutGroup, b: RolloutGroup) -> None:
    assert encode(a) == encode(b)
    for sa, sb in zip(a.samples, b.samples, strict=True):
        np.testing.assert_array_equal(sa.completion, sb.completion)
        np.testing.assert_array_equal(sa.prompt, sb.prompt)
        np.testing.assert_array_equal(sa.logprobs, sb.logprobs)
        np.testing.assert_array_equal(sa.versions, sb.versions)


@pytest.mark.parametrize("codec_name", ["msgpack", "json"])
def test_every_message_type_round_trips(redis_url, stream_name, make_group, codec_name):
    codec = {"json": JSON}.get(codec_name)
    kwargs = {"codec": codec} if codec else {}
    group = make_group("g0", n_samples=3)
    sample = make_group("g1", n_samples=1).samples[0]
    policy = PolicyVersion(version=7, path="/run/policy/v7", trainer_step=70)
    metric = MetricEvent(source="trainer", step=70, values={"loss": 0.25, "kl": 1e-3})

    async def body():
        r = connect(redis_url)
        got_group = await _through_queue(r, f"{stream_name}:g", group, RolloutGroup, kwargs)
        got_sample = await _through_queue(r, f"{stream_name}:s", sample, RolloutSample, kwargs)
        reader_p = BroadcastReader(r, f"{stream_name}:p", PolicyVersion, start="0", **kwargs)
        reader_m = BroadcastReader(r, f"{stream_name}:m", MetricEvent, start="0", **kwargs)
        await Broadcaster(r, f"{stream_name}:p", **kwargs).publish(policy)
        await Broadcaster(r, f"{stream_name}:m", **kwargs).publish(metric)
        got_p = [m for _, m in await reader_p.read(block_ms=0)]
        got_m = [m for _, m in await reader_m.read(block_ms=0)]
        await r.aclose()
        return got_group, got_sample, got_p, got_m

    got_group, got_sample, got_p, got_m = asyncio.run(body())
    _assert_groups_equal(got_group, group)
    assert encode(got_sample) == encode(sample)
    np.testing.assert_array_equal(got_sample.logprobs, sample.logprobs)
    assert got_p == [policy] and got_m == [metric]


async def _through_queue(r, stream, message, kind, kwargs):
    consumer = StreamConsumer(r, stream, "g", "c", kind, **kwargs)
    await consumer.ensure_group()
    await StreamProducer(r, stream, max_len=4, **kwargs).publish(message)
    (delivery,) = await consumer.fetch(count=4, block_ms=0)
    assert await consumer.ack([delivery.entry_id]) == 1
    assert await r.xlen(stream) == 0  # acked work items are deleted: XLEN is the backlog
    return delivery.message


def test_full_stream_blocks_producer_until_acked(redis_url, stream_name, make_group):
    groups = [make_group(f"g{i}") for i in range(10)]

    async def body():
        r = connect(redis_url)
        consumer = StreamConsumer(r, stream_name, "trainer", "t0", RolloutGroup)
        await consumer.ensure_group()
        task = asyncio.create_task(StreamProducer(r, stream_name, max_len=3).publish_many(groups))
        while await r.xlen(stream_name) < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        blocked, backlog = not task.done(), await r.xlen(stream_name)
        received, max_seen = [], 0
        while len(received) < len(groups):
            max_seen = max(max_seen, await r.xlen(stream_name))
            batch = await consumer.fetch(count=2, block_ms=200)
            received += [d.message for d in batch]
            await consumer.ack([d.entry_id for d in batch])
        ids = await task
        await r.aclose()
        return blocked, backlog, received, max_seen, ids

    blocked, backlog, received, max_seen, ids = asyncio.run(body())
    assert blocked and backlog == 3, "producer must wait at max_len, not drop or trim"
    assert max_seen <= 3
    assert [g.group_id for g in received] == [g.group_id for g in groups]  # nothing lost, in order
    assert len(set(ids)) == len(groups)


def test_concurrent_producers_never_exceed_max_len(redis_url, stream_name, make_group):
    async def body():
        r = connect(redis_url)
        consumer = StreamConsumer(r, stream_name, "trainer", "t0", RolloutGroup)
        await consumer.ensure_group()
        producers = [
            asyncio.create_task(
                StreamProducer(connect(redis_url), stream_name, max_len=5).publish_many(
                    [make_group(f"p{p}-{i}") for i in range(15)]
                )
            )
            for p in range(3)
        ]
        received, max_seen = [], 0
        while len(received) < 45:
            max_seen = max(max_seen, await r.xlen(stream_name))
            batch = await consumer.fetch(count=4, block_ms=200)
            received += [d.message.group_id for d in batch]
            await consumer.ack([d.entry_id for d in batch])
        await asyncio.gather(*producers)
        return received, max_seen

    received, max_seen = asyncio.run(body())
    assert max_seen <= 5
    for p in range(3):  # per-producer order preserved, nothing lost or duplicated
        assert [g for g in received if g.startswith(f"p{p}-")] == [f"p{p}-{i}" for i in range(15)]


def test_backpressure_deadline_and_cancel_report_what_was_published(redis_url, stream_name, make_group):
    async def body():
        r = connect(redis_url)
        producer = StreamProducer(r, stream_name, max_len=2)
        with pytest.raises(BackpressureTimeout, match="unacknowledged") as timeout:
            await producer.publish_many([make_group(f"g{i}") for i in range(3)], timeout_s=0.2)
        cancel = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, cancel.set)
        with pytest.raises(PublishCancelled) as cancelled:
            await producer.publish(make_group("g3"), cancel=cancel, timeout_s=60)
        entries = await r.xrange(stream_name)
        await r.aclose()
        return timeout.value.published_ids, cancelled.value.published_ids, entries

    published, cancelled_ids, entries = asyncio.run(body())
    assert len(published) == 2 and cancelled_ids == []
    assert [e[0].decode() for e in entries] == published  # the stream holds exactly those


def test_poison_messages_go_to_dead_letters(redis_url, stream_name, make_group):
    good = make_group("good")

    async def body():
        r = connect(redis_url)
        consumer = StreamConsumer(r, stream_name, "trainer", "t0", RolloutGroup)
        await consumer.ensure_group()
        await r.xadd(stream_name, {"k": "RolloutGroup", "d": b"\xc1 not msgpack"})
        await r.xadd(stream_name, {"k": "PolicyVersion", "d": encode(PolicyVersion(
            version=1, path="/p", trainer_step=1))})
        await StreamProducer(r, stream_name, max_len=10).publish(good)
        delivered = await consumer.fetch(count=10, block_ms=0)
        await consumer.ack([d.entry_id for d in delivered])
        dead = await r.xrange(f"{stream_name}:dead")
        left = await r.xlen(stream_name), await consumer.pending_count()
        await r.aclose()
        return delivered, dead, left

    delivered, dead, left = asyncio.run(body())
    assert [d.message.group_id for d in delivered] == ["good"]  # the queue is not blocked
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert len(reasons) == 2 and all(r.startswith("undecodable") for r in reasons)
    assert b"PolicyVersion" in dead[1][1][b"k"] and dead[0][1][b"d"] == b"\xc1 not msgpack"
    assert left == (0, 0)  # acked, not lost: the payload lives on in the dead-letter stream


def test_redelivery_is_bounded_and_restarted_consumer_gets_its_pending(
    redis_url, stream_name, make_group
):
    async def body():
        r = connect(redis_url)
        def consumer():
            return StreamConsumer(r, stream_name, "trainer", "t0", RolloutGroup,
                                  min_idle_ms=1, reclaim_interval_ms=0, max_deliveries=2)
        await consumer().ensure_group()
        await StreamProducer(r, stream_name, max_len=10).publish(make_group("crashy"))
        counts = []
        for _ in range(3):  # a consumer that dies on this message, restarted each time
            await asyncio.sleep(0.01)
            counts.append([d.deliveries for d in await consumer().fetch(count=5, block_ms=0)])
        dead = await r.xrange(f"{stream_name}:dead")
        pending = await consumer().pending_count()
        await r.aclose()
        return counts, dead, pending

    counts, dead, pending = asyncio.run(body())
    assert counts == [[1], [2], []]
    assert len(dead) == 1 and b"delivered 3 times" in dead[0][1][b"reason"]
    assert pending == 0


def test_broadcast_every_reader_sees_every_message_and_latest_wins(redis_url, stream_name):
    async def body():
        r = connect(redis_url)
        early = BroadcastReader(r, stream_name, PolicyVersion)
        await early.start()
        caster = Broadcaster(r, stream_name, max_len=1_000)
        for v in range(1, 6):
            await caster.publish(PolicyVersion(version=v, path=f"/p/v{v}", trainer_step=v * 10))
        await r.xadd(stream_name, {"k": "PolicyVersion", "d": b"garbage"})
        replay = BroadcastReader(r, stream_name, PolicyVersion, start="0")
        a = [m.version for _, m in await early.read(block_ms=0)]
        b = [m.version for _, m in await replay.read(block_ms=0)]
        latest = await early.latest()
        late = BroadcastReader(r, stream_name, PolicyVersion)
        await late.start()
        nothing = await late.read(block_ms=0)
        await r.aclose()
        return a, b, latest, nothing, early.skipped

    a, b, latest, nothing, skipped = asyncio.run(body())
    assert a == b == [1, 2, 3, 4, 5]
    assert latest is not None and latest.version == 5  # newest decodable one
    assert nothing == [] and skipped == 1


def test_touch_keeps_a_slow_consumer_from_being_reclaimed(redis_url, stream_name, make_group):
    async def body():
        r = connect(redis_url)
        def consumer(name):
            return StreamConsumer(r, stream_name, "trainer", name, RolloutGroup,
                                  min_idle_ms=1_000, reclaim_interval_ms=0)
        slow, other = consumer("slow"), consumer("other")
        await slow.ensure_group()
        await StreamProducer(r, stream_name, max_len=10).publish(make_group("long-step"))
        (held,) = await slow.fetch(count=1, block_ms=0)
        stolen_while_touched = []
        for _ in range(12):  # 1.2 s of "training" (> min_idle_ms), a heartbeat every 0.1 s
            await asyncio.sleep(0.1)
            await slow.touch([held.entry_id])
            stolen_while_touched += await other.fetch(count=1, block_ms=0)
        await asyncio.sleep(1.2)  # the heartbeat stops: the entry is up for grabs
        stolen_after = await other.fetch(count=1, block_ms=0)
        await r.aclose()
        return stolen_while_touched, stolen_after

    stolen_while_touched, stolen_after = asyncio.run(body())
    assert stolen_while_touched == []
    assert [d.message.group_id for d in stolen_after] == ["long-step"]
    assert stolen_after[0].deliveries == 2


def test_ack_records_ledger_ids_with_the_ack(redis_url, stream_name, make_group):
    from services.bus.idempotency import IdempotencyLedger, rollout_ids

    async def body():
        r = connect(redis_url)
        consumer = StreamConsumer(r, stream_name, "trainer", "t0", RolloutGroup)
        await consumer.ensure_group()
        await StreamProducer(r, stream_name, max_len=10).publish_many(
            [make_group("a"), make_group("b")])
        ledger = IdempotencyLedger(r, f"{stream_name}:ledger")
        batch = await consumer.fetch(count=2, block_ms=0)
        ids = [rid for d in batch for rid in rollout_ids(d.message)]
        acked = await consumer.ack([d.entry_id for d in batch], ledger=ledger, processed_ids=ids)
        fresh = await ledger.filter_new(["a/0", "b/1", "c/0"], also_processed={"c/0"})
        state = acked, await ledger.count(), fresh, await consumer.pending_count()
        await r.aclose()
        return state

    assert asyncio.run(body()) == (2, 4, [], 0)


def test_channels_built_from_settings_talk_to_each_other(redis_url, stream_name, make_group):
    from services.bus import channels
    from services.bus.settings import BusSettings

    settings = BusSettings(url=redis_url, rollout_stream=f"{stream_name}:r",
                           policy_stream=f"{stream_name}:p", ledger_key=f"{stream_name}:l",
                           max_len=2)

    async def body():
        r = connect(redis_url)
        consumer = channels.rollout_consumer(r, settings, "trainer-0")
        await consumer.ensure_group()
        producer = channels.rollout_producer(r, settings)
        with pytest.raises(BackpressureTimeout):  # max_len from the settings bounds it
            await producer.publish_many([make_group(f"g{i}") for i in range(3)], timeout_s=0.1)
        got = await consumer.fetch(count=5, block_ms=0)
        reader = channels.policy_reader(r, settings)
        await reader.start()
        await channels.policy_broadcaster(r, settings).publish(
            PolicyVersion(version=2, path="/p/v2", trainer_step=20))
        versions = [m.version for _, m in await reader.read(block_ms=0)]
        await r.aclose()
        return [d.message.group_id for d in got], versions

    assert asyncio.run(body()) == (["g0", "g1"], [2])


def test_room_held_by_a_crashed_producer_comes_back_after_its_reservation_expires(
    redis_url, stream_name, make_group
):
    async def body():
        r = connect(redis_url)
        crashed = StreamProducer(r, stream_name, max_len=3, reservation_ttl_ms=1_500)
        # The crashed producer reserved all the room, then died before its XADDs.
        got = await crashed._reserve(keys=[stream_name, crashed.reservation_key],
                                     args=[3, 3, "dead-producer", 1_500])
        producer = StreamProducer(r, stream_name, max_len=3)
        with pytest.raises(BackpressureTimeout):
            await producer.publish(make_group("early"), timeout_s=0.05)
        ids = await producer.publish_many([make_group(f"g{i}") for i in range(3)], timeout_s=30)
        length = await r.xlen(stream_name)
        await r.aclose()
        return got, ids, length

    got, ids, length = asyncio.run(body())
    assert got == 3 and len(ids) == 3 and length == 3


@pytest.mark.slow
def test_fetch_can_block_longer_than_redis_py_default_read_timeout(redis_url, stream_name):
    # redis-py 8 reads with a 5 s socket timeout by default; connect() must lift it,
    # or every idle trainer fetch with block_ms >= 5000 raises TimeoutError.
    async def body():
        r = connect(redis_url)
        consumer = StreamConsumer(r, stream_name, "trainer", "t0", RolloutGroup)
        got = await consumer.fetch(count=1, block_ms=5_500)
        await r.aclose()
        return got

    assert asyncio.run(body()) == []
