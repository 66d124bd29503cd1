"""Cheap validation of a published safetensors checkpoint dir before any replica sees it.

vLLM's in-place ``reload_weights`` only *warns* about tensors missing from a
checkpoint and keeps the old values for them, so a truncated or mismatched
dir would silently yield a half-old, half-new policy. We refuse such a dir up
front: config.json parses, every safetensors file has a well-formed header
whose data fits the file, an index (if any) names only present shards and, when
the dir being replaced is known, the tensor names, shapes and dtypes match it.
Reads headers only (a few KB), never tensor data.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_HEADER_BYTES = 100 * 1024 * 1024  # same cap as the safetensors library


class CheckpointError(ValueError):
    """The checkpoint dir is unusable; the message names the file and the problem."""


TensorSpec = tuple[str, tuple[int, ...]]  # (dtype, shape)


def read_safetensors_header(path: Path) -> dict[str, TensorSpec]:
    """Tensor name -> (dtype, shape) from one file's header, checking offsets fit the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise CheckpointError(f"{path}: too short to be safetensors ({size} bytes)")
        (n,) = struct.unpack("<Q", raw_len)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{path}: header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object")
    data_len = size - 8 - n
    specs: dict[str, TensorSpec] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = info["data_offsets"]
            specs[name] = (str(info["dtype"]), tuple(int(d) for d in info["shape"]))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed entry for tensor {name!r}") from None
        if not 0 <= start <= end <= data_len:
            raise CheckpointError(
                f"{path}: tensor {name!r} data [{start}, {end}) runs past the file's {data_len} data bytes"
            )
    if not specs:
        raise CheckpointError(f"{path}: holds no tensors")
    return specs


def read_checkpoint(path: str | Path) -> dict[str, TensorSpec]:
    """Validate an HF safetensors dir; return its tensors' (dtype, shape) by name."""
    d = Path(path)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint dir {d} does not exist or is not a directory")
    config = d / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{d}: no config.json")
    try:
        json.loads(config.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config}: not valid JSON ({err})") from None
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{d}: no *.safetensors files")
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{index}: malformed index ({err!r})") from None
        missing = sorted(s for s in shards if not (d / s).is_file())
        if missing:
            raise CheckpointError(f"{d}: index names missing shards {missing}")
    tensors: dict[str, TensorSpec] = {}
    for f in files:
        for name, spec in read_safetensors_header(f).items():
            if name in tensors:
                raise CheckpointError(f"{d}: tensor {name!r} appears in two files")
            tensors[name] = spec
    return tensors


def check_compatible(new: dict[str, TensorSpec], old: dict[str, TensorSpec], where: str) -> None:
    """The new checkpoint must carry exactly the served tensors with the same dtypes and shapes."""
    missing = sorted(set(old) - set(new))
    extra = sorted(set(new) - set(old))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    if missing or extra or changed:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} unknown tensors (e.g. {extra[:3]})")
        if changed:
            k = changed[0]
            parts.append(f"{len(changed)} with other dtype/shape (e.g. {k}: {old[k]} -> {new[k]})")
        raise CheckpointError(f"{where} does not match the served model: " + "; ".join(parts))
