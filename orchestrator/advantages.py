"""Group advantages, zero-variance filtering and DAPO's soft overlong penalty.

Advantages are computed here, where the groups are; the trainer stays
algorithm-blind (style.md). Definitions follow ../shared/docs/algorithms.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GROUP_STD_EPS = 1e-6


def group_advantages(rewards: Sequence[float], *, normalize_std: bool = True) -> np.ndarray:
    """GRPO group advantage: (r_i - mean(r)) / (std(r) + 1e-6) over one prompt's samples.

    ``std`` is the population standard deviation (ddof=0), as in verl's GRPO
    outcome advantage (``torch.std`` there is unbiased; with n = 16 the two
    differ by 3%: we follow the ASPO paper's Eq. for GRPO, which uses the
    plain std). ``normalize_std=False`` gives Dr. GRPO's mean-centred variant.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        return r
    centred = r - r.mean()
    if not normalize_std:
        return centred
    return centred / (r.std() + GROUP_STD_EPS)


def has_signal(rewards: Sequence[float], tol: float = 1e-9) -> bool:
    """False for a zero-variance group (all rewards equal): it carries no gradient.

    Archer2.0 drops such groups (all 0 or all 1) without refilling; DAPO refills.
    """
    r = np.asarray(rewards, dtype=np.float64)
    return r.size > 1 and float(r.max() - r.min()) > tol


def overlong_penalty(length: int, *, max_length: int, cache_length: int) -> float:
    """DAPO soft overlong punishment (DAPO paper, Eq. 13).

    0 when L <= L_max - L_cache; ((L_max - L_cache) - L) / L_cache inside the
    buffer (linear from 0 to -1); -1 beyond L_max.
    """
    if cache_length <= 0 or cache_length > max_length:
        raise ValueError(f"cache_length must be in (0, max_length={max_length}], got {cache_length}")
    threshold = max_length - cache_length
    if length <= threshold:
        return 0.0
    if length > max_length:
        return -1.0
    return (threshold - length) / cache_length
