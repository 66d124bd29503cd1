"""Pure logic of the bus: settings, codecs, version parsing, idempotency ids."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from aspo.settings import SettingsError, load_settings
from services.bus.codec import JSON, MSGPACK
from services.bus.idempotency import rollout_ids
from services.bus.messages import MetricEvent, PolicyVersion, RolloutGroup, RolloutSample
from services.bus.redis_server import RedisServerError, find_redis_server, parse_version
from services.bus.settings import BusSettings
from services.bus.transport import StreamProducer


def _group() -> RolloutGroup:
    rng = np.random.default_rng(1)
    samples = [
        RolloutSample.build(
            rollout_id=f"r{i}", prompt_ids=rng.integers(0, 2**31 - 1, 5),
            completion_ids=rng.integers(0, 2**31 - 1, 9),
            behaviour_logprobs=rng.standard_normal(9).astype(np.float32),
            token_versions=[i] * 9, reward=1.0, advantage=-0.25 * i,
        )
        for i in range(3)
    ]
    return RolloutGroup(group_id="g", task_id="t", samples=samples)


@pytest.mark.parametrize("codec", [MSGPACK, JSON], ids=lambda c: c.name)
@pytest.mark.parametrize("message", [
    _group(),
    _group().samples[1],
    PolicyVersion(version=3, path="/r/policy/v3", trainer_step=30),
    MetricEvent(source="orchestrator", step=4, values={"reward_mean": 0.5}),
], ids=lambda m: type(m).__name__)
def test_codecs_round_trip_every_message_type(codec, message):
    back = codec.decoder(type(message))(codec.encode(message))
    assert back == message
    if isinstance(message, RolloutGroup):
        for a, b in zip(back.samples, message.samples, strict=True):
            np.testing.assert_array_equal(a.logprobs, b.logprobs)
            np.testing.assert_array_equal(a.completion, b.completion)


def test_decoder_rejects_a_payload_of_another_type():
    payload = MSGPACK.encode(PolicyVersion(version=1, path="/p", trainer_step=1))
    with pytest.raises(msgspec.ValidationError):
        MSGPACK.decoder(RolloutGroup)(payload)


def test_redis_url_env_selects_the_server(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:6380/2")
    monkeypatch.setenv("ASPO_BUS_MAX_LEN", "64")
    settings = BusSettings()
    assert settings.url == "redis://10.0.0.5:6380/2" and settings.max_len == 64
    assert BusSettings(url=None).url is None  # an explicit override beats the environment


def test_bad_settings_name_the_field(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("bus:\n  max_len: 0\n")
    with pytest.raises(SettingsError, match="max_len"):
        load_settings(BusSettings, yaml_file, section="bus")
    with pytest.raises(SettingsError, match="url"):
        load_settings(BusSettings, url="http://not-redis:80")
    with pytest.raises(SettingsError, match="appendfsync"):
        load_settings(BusSettings, appendfsync="no")


def test_parse_version():
    assert parse_version("7.0.15") == (7, 0, 15)
    assert parse_version("6.2.14") >= (6, 2)
    assert parse_version("6.0.9")[:2] < (6, 2)
    assert parse_version("7.2.4-rc1") == (7, 2)
    with pytest.raises(RedisServerError):
        parse_version("unknown")


def test_explicit_missing_binary_is_a_clear_error(tmp_path: Path):
    with pytest.raises(RedisServerError, match="not an executable"):
        find_redis_server(tmp_path / "redis-server")


def test_rollout_ids_are_the_idempotency_keys():
    group = _group()
    assert rollout_ids(group) == ["r0", "r1", "r2"]
    assert rollout_ids(group.samples[2]) == ["r2"]
    with pytest.raises(TypeError, match="PolicyVersion"):
        rollout_ids(PolicyVersion(version=1, path="/p", trainer_step=1))


def test_producer_batches_never_split_or_reorder_messages():
    producer = StreamProducer.__new__(StreamProducer)
    producer.batch_bytes = 10
    items = [(b"K", b"x" * n) for n in (4, 4, 4, 30, 1, 1)]
    chunks, start = [], 0
    while start < len(items):
        chunk = producer._chunk(items, start)
        chunks.append([len(p) for _, p in chunk])
        start += len(chunk)
    assert chunks == [[4, 4], [4], [30], [1, 1]]  # an oversized message still goes, alone
