"""Tasks from local files: JSONL, JSON, Parquet, or a `datasets.save_to_disk` dir.

Record fields: `prompt` (a string, sent as one user message) or `messages`
(chat messages); `kind` ("math" | "code", default from settings);
`ground_truth` (math) or `tests` (code: {"inputs", "outputs", "fn_name"?}, a
dict or its JSON string); optional `id`. A record that breaks these rules is
an error naming the file, the record number and the field: we refuse to train
on a silently skipped subset.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.tasks.base import Task


def _load_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"task file not found: {path}")
    if path.suffix == ".jsonl":
        records = []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{i + 1}: invalid JSON ({err.msg})") from None
        return records
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json task file must hold a list of records")
        return data
    import datasets  # parquet files and save_to_disk dirs go through HF datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
    elif path.suffix == ".parquet":
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    else:
        raise ValueError(f"{path}: unsupported task file type (use .jsonl, .json, .parquet or a save_to_disk dir)")
    return [dict(r) for r in ds]


def record_to_task(record: dict[str, Any], index: int, default_kind: str, origin: str) -> Task:
    where = f"{origin} record {index}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
    if "messages" in record and record["messages"]:
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in record["messages"]]
    elif isinstance(record.get("prompt"), str) and record["prompt"].strip():
        messages = [{"role": "user", "content": record["prompt"]}]
    else:
        raise ValueError(f"{where}: needs a non-empty `prompt` string or `messages` list")
    kind = record.get("kind") or default_kind
    tests = record.get("tests")
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: `tests` is a string but not JSON") from None
    truth = record.get("ground_truth")
    if truth is None:
        truth = record.get("answer")
    try:
        return Task(
            task_id=str(record.get("id", f"{Path(origin).stem}-{index}")),
            kind=kind,
            messages=messages,
            ground_truth=None if truth is None else str(truth),
            tests=tests,
        )
    except ValidationError as err:
        raise ValueError(f"{where}: " + "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None


def load_file_tasks(path: Path, default_kind: str = "math", shuffle_seed: int | None = None) -> list[Task]:
    tasks = [record_to_task(r, i, default_kind, str(path)) for i, r in enumerate(_load_records(path))]
    if not tasks:
        raise ValueError(f"{path}: no task records")
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(tasks)
    return tasks
