"""Training-dynamics metrics computed on rollouts (definitions: Archer2.0).

Repetition ratio, per response: lowercase, split on whitespace, word
20-grams; (20-gram occurrences already seen earlier in the response) /
(number of 20-grams); 0 for responses shorter than 20 words. The batch value is
the mean over responses, also split by positive and non-positive reward.
"""

from __future__ import annotations

from collections.abc import Sequence

NGRAM = 20


def repetition_ratio(text: str, n: int = NGRAM) -> float:
    words = text.lower().split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for i in range(total):
        gram = tuple(words[i : i + n])
        if gram in seen:
            repeated += 1
        else:
            seen.add(gram)
    return repeated / total


def batch_repetition(texts: Sequence[str], rewards: Sequence[float]) -> dict[str, float]:
    """Mean repetition ratio over the batch, and over positive / non-positive rewards."""
    if len(texts) != len(rewards):
        raise ValueError(f"{len(texts)} texts but {len(rewards)} rewards")
    ratios = [repetition_ratio(t) for t in texts]
    pos = [x for x, r in zip(ratios, rewards) if r > 0]
    neg = [x for x, r in zip(ratios, rewards) if r <= 0]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    return {"repetition": mean(ratios), "repetition_pos": mean(pos), "repetition_nonpos": mean(neg)}
