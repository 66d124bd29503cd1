import json

import pytest

from orchestrator.settings import FileTasks
from orchestrator.tasks.files import load_file_tasks
from orchestrator.tasks.provider import TaskProvider

RECORDS = [
    {"id": "m1", "prompt": "What is 2+2?", "ground_truth": "4"},
    {"id": "m2", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1/2?"}],
     "answer": "\\frac{1}{2}"},
    {"id": "c1", "kind": "code", "prompt": "double it", "tests": json.dumps({"inputs": ["2\n"], "outputs": ["4\n"]})},
]


def _check(tasks):
    assert [t.task_id for t in tasks] == ["m1", "m2", "c1"]
    assert tasks[0].messages == [{"role": "user", "content": "What is 2+2?"}] and tasks[0].ground_truth == "4"
    assert tasks[1].messages[0]["role"] == "system" and tasks[1].ground_truth == "\\frac{1}{2}"
    assert tasks[2].kind == "code" and tasks[2].tests == {"inputs": ["2\n"], "outputs": ["4\n"]}


def test_jsonl_and_json(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    _check(load_file_tasks(jsonl))
    js = tmp_path / "t.json"
    js.write_text(json.dumps(RECORDS))
    _check(load_file_tasks(js))


def test_parquet_and_datasets_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [dict(r, messages=r.get("messages"), answer=r.get("answer"), kind=r.get("kind"), tests=r.get("tests"),
                 prompt=r.get("prompt"), ground_truth=r.get("ground_truth")) for r in RECORDS]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "t.parquet"))
    _check(load_file_tasks(tmp_path / "t.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    _check(load_file_tasks(tmp_path / "saved"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "x", "ground_truth": "1"}\n{bad json\n', r"t.jsonl:2: invalid JSON"),
        ('{"ground_truth": "1"}\n', r"record 0: needs a non-empty `prompt`"),
        ('{"prompt": "x"}\n', r"record 0: .*ground_truth"),
        ('{"prompt": "x", "kind": "code", "tests": "not json"}\n', r"record 0: `tests` is a string but not JSON"),
        ("\n", "no task records"),
    ],
)
def test_bad_records_are_named(tmp_path, content, message):
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_file_tasks(path)


def test_held_out_split_is_disjoint_and_stable(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "prompt": f"q{i}", "ground_truth": str(i)}) for i in range(200)))
    source = FileTasks(path=path, eval_fraction=0.2)
    train, evals = TaskProvider(source, "train"), TaskProvider(source, "eval")
    train_ids = {train.get(i).task_id for i in range(len(train))}
    eval_ids = {evals.get(i).task_id for i in range(len(evals))}
    assert not train_ids & eval_ids and len(train_ids | eval_ids) == 200
    assert 20 <= len(eval_ids) <= 60
    assert {TaskProvider(source, "eval").get(i).task_id for i in range(len(evals))} == eval_ids
    assert train.get(len(train)).task_id == train.get(0).task_id   # epochs cycle
