"""A seeded, procedural arithmetic task set with difficulty levels (no download).

It meets the default model where it is (field notes): SmolLM2-135M answers
"What is a + b?" with single digits correctly in ~42% of samples at
temperature 0.7 but almost never uses \\boxed{}, so the prompt asks for the
final number and the reward takes the final number (boxed when present:
`Task.answer = "final_number"`). Plain math-verify extraction would be gamed
here: it evaluates "9 + 5" copied from the question as 14. Most
groups at level 1 then have mixed rewards, which is what GRPO-style learning
needs. Higher levels add digits and operations.

Train and eval splits draw from disjoint seed streams, and eval prompts are
deduplicated against nothing else: a prompt can appear in both only by
coincidence of numbers, which is reported by `overlap()` and is tiny at
levels >= 2.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from orchestrator.tasks.base import Task

# level -> (operand digits, operators)
LEVELS: dict[int, tuple[int, tuple[str, ...]]] = {
    1: (1, ("+",)),
    2: (1, ("+", "-")),
    3: (2, ("+",)),
    4: (2, ("+", "-")),
    5: (2, ("+", "-", "*")),
}
PROMPT = "What is {a} {op} {b}? Give the final answer as a number."
_SPLIT_SALT = {"train": 0x5EED, "eval": 0xE7A1}


def make_task(level: int, rng: random.Random, index: int, split: str) -> Task:
    if level not in LEVELS:
        raise ValueError(f"unknown arithmetic level {level}; known levels: {sorted(LEVELS)}")
    digits, ops = LEVELS[level]
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    op = rng.choice(ops)
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    return Task(
        task_id=f"arith-{split}-L{level}-{index}",
        kind="math",
        messages=[{"role": "user", "content": PROMPT.format(a=a, op=op, b=b)}],
        ground_truth=str(answer),
        level=level,
        answer="final_number",
    )


def arithmetic_tasks(split: str, seed: int, levels: tuple[int, ...] = (1,), start: int = 0) -> Iterator[Task]:
    """An endless, reproducible stream of tasks; ``start`` skips ahead (resume)."""
    if split not in _SPLIT_SALT:
        raise ValueError(f"split must be one of {sorted(_SPLIT_SALT)}, got {split!r}")
    index = start
    while True:
        yield arithmetic_task(split, seed, levels, index)
        index += 1


def arithmetic_task(split: str, seed: int, levels: tuple[int, ...] | list[int], index: int) -> Task:
    """The ``index``-th task of a split's stream (random access, for resume)."""
    if split not in _SPLIT_SALT:
        raise ValueError(f"split must be one of {sorted(_SPLIT_SALT)}, got {split!r}")
    rng = random.Random(hash((seed, _SPLIT_SALT[split], index)) & 0xFFFFFFFF)
    return make_task(levels[index % len(levels)], rng, index, split)
