import numpy as np
import pytest

from orchestrator.advantages import group_advantages, has_signal, overlong_penalty


def test_group_advantages_are_standardised():
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    adv = group_advantages(rewards)
    assert abs(adv.mean()) < 1e-9
    assert abs(adv.std() - 1.0) < 1e-4
    # correct answers get positive advantage, wrong ones negative
    assert all((a > 0) == (r > 0) for a, r in zip(adv, rewards))


def test_group_advantages_without_std_are_centred_only():
    adv = group_advantages([2.0, 0.0], normalize_std=False)
    np.testing.assert_allclose(adv, [1.0, -1.0])


def test_zero_variance_group_has_no_signal_and_zero_advantage():
    assert not has_signal([1.0, 1.0, 1.0])
    assert not has_signal([0.0])
    assert has_signal([0.0, 1.0])
    np.testing.assert_allclose(group_advantages([1.0, 1.0, 1.0]), 0.0)


@pytest.mark.parametrize(
    ("length", "expected"),
    [(100, 0.0), (768, 0.0), (896, -0.5), (1024, -1.0), (1025, -1.0)],
)
def test_overlong_penalty_matches_dapo(length, expected):
    assert overlong_penalty(length, max_length=1024, cache_length=256) == pytest.approx(expected)


def test_overlong_penalty_rejects_bad_buffer():
    with pytest.raises(ValueError, match="cache_length"):
        overlong_penalty(10, max_length=100, cache_length=0)
