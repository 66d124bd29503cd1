import itertools

import pytest

from orchestrator.metrics import batch_repetition, repetition_ratio
from orchestrator.tasks.arithmetic import arithmetic_tasks
from orchestrator.tasks.base import Task


def _take(split, seed, n, levels=(1,)):
    return list(itertools.islice(arithmetic_tasks(split, seed, levels), n))


def test_arithmetic_tasks_are_reproducible_and_correct():
    a, b = _take("train", 7, 50, (1, 3, 5)), _take("train", 7, 50, (1, 3, 5))
    assert [t.model_dump() for t in a] == [t.model_dump() for t in b]
    for t in a:
        text = t.messages[0]["content"]
        expr = text.removeprefix("What is ").split("?")[0]
        assert eval(expr) == int(t.ground_truth)  # noqa: S307 - our own generated text
    assert {t.level for t in a} == {1, 3, 5}


def test_train_and_eval_streams_differ_and_resume():
    train, evals = _take("train", 1, 40, (3,)), _take("eval", 1, 40, (3,))
    assert [t.messages for t in train] != [t.messages for t in evals]
    resumed = list(itertools.islice(arithmetic_tasks("train", 1, (3,), start=20), 20))
    assert [t.task_id for t in resumed] == [t.task_id for t in train[20:]]


def test_unknown_level_and_split_are_named():
    with pytest.raises(ValueError, match="levels"):
        _take("train", 1, 1, (9,))
    with pytest.raises(ValueError, match="split"):
        _take("test", 1, 1)


def test_task_requires_matching_reference():
    with pytest.raises(ValueError, match="ground_truth"):
        Task(task_id="x", kind="math", messages=[])


def test_repetition_ratio():
    assert repetition_ratio("one two three") == 0.0
    unique = " ".join(f"w{i}" for i in range(40))
    assert repetition_ratio(unique) == 0.0
    looped = " ".join(["a b c d e f g h i j"] * 6)   # 60 words, period 10
    # 41 20-grams, only 10 distinct: 31 repeats
    assert repetition_ratio(looped) == pytest.approx(31 / 41)
    stats = batch_repetition([looped, unique], [1.0, 0.0])
    assert stats["repetition_pos"] == pytest.approx(31 / 41)
    assert stats["repetition_nonpos"] == 0.0
