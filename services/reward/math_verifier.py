"""Math answer extraction and verification of one item (runs inside a math worker process).

`extract_boxed` and `final_segment` are pure string functions (tested directly);
`verify_item` calls math-verify and must only run in a worker process from
`math_pool.py`: math-verify can hang inside C code (power towers such as
5^(5^(5^5))) and its own time-outs use signal.alarm, which works only in a main
thread. The worker calls it with math-verify's time-outs off and is killed from
outside when the hard deadline passes.

Order of extraction (the order verl / DeepScaleR-style rewards use):
1. keep the text after the last `</think>` (reasoning is not the answer);
2. the last `\\boxed{...}` or `\\fbox{...}` with balanced braces;
3. otherwise math-verify's own fallbacks: LaTeX (`$...$`, `\\(...\\)`) and plain
   expressions (the last number / expression in the text).
`verify(gold, pred)` is asymmetric on purpose (gold first), as math-verify documents.
"""

from __future__ import annotations

import re
from typing import Any

THINK_END = "</think>"
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GOLD_CACHE_SIZE = 4096


def final_segment(completion: str) -> str:
    """The part of a completion that may hold the answer: after the last `</think>` if any."""
    idx = completion.rfind(THINK_END)
    return completion if idx < 0 else completion[idx + len(THINK_END):]


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` with balanced braces, or None.

    An unclosed box (truncated generation) does not count as an answer.
    """
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                i += 2  # skip escaped characters such as \{ and \}
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
            i += 1
    return None


def _normalise_plain(s: str) -> str:
    """Cheap canonical form for the exact-match fast path (no sympy)."""
    s = s.strip().strip("$").strip()
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    return re.sub(r"\s+", "", s).rstrip(".")


class _GoldCache:
    """Parsed ground truths by text: in RL, every completion of a group shares its gold."""

    def __init__(self) -> None:
        self._items: dict[str, list[Any]] = {}

    def get(self, gold: str) -> list[Any] | None:
        return self._items.get(gold)

    def put(self, gold: str, parsed: list[Any]) -> None:
        if len(self._items) >= _GOLD_CACHE_SIZE:
            self._items.pop(next(iter(self._items)))
        self._items[gold] = parsed


_gold_cache = _GoldCache()


def parse_gold(gold: str) -> list[Any]:
    """Parse a ground truth given plain ("42", "0.5", "\\frac{1}{2}") or as LaTeX.

    Plain values that the LaTeX extractor misses are retried wrapped in `$...$`.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    cached = _gold_cache.get(gold)
    if cached is not None:
        return cached
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    parsed = parse(gold, extraction_config=configs, parsing_timeout=None)
    if not parsed or all(isinstance(p, str) for p in parsed):
        wrapped = parse(f"${gold}$", extraction_config=configs, parsing_timeout=None)
        if wrapped:
            parsed = wrapped
    _gold_cache.put(gold, parsed)
    return parsed


def parse_prediction(completion: str) -> tuple[list[Any], str | None]:
    """Parse the answer of a completion; returns (parsed, extracted text or None)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = final_segment(completion)
    boxed = extract_boxed(text)
    if boxed is not None:
        parsed = parse(f"$\\boxed{{{boxed}}}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
        if not parsed:
            parsed = parse(f"${boxed}$", parsing_timeout=None)
        return parsed, boxed
    parsed = parse(
        text, extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=None
    )
    extracted = str(parsed[-1]) if parsed else None
    return parsed, extracted


def verify_item(gold: str, completion: str) -> dict[str, Any]:
    """Verify one completion against its ground truth. Returns a plain dict (crosses a pipe).

    Keys: status ("ok" | "no_answer" | "error"), correct (bool), extracted (str | None),
    message (str).
    """
    from math_verify import verify

    boxed = extract_boxed(final_segment(completion))
    if boxed is not None and _normalise_plain(boxed) == _normalise_plain(gold) and boxed.strip():
        return {"status": "ok", "correct": True, "extracted": boxed, "message": "exact match"}
    pred, extracted = parse_prediction(completion)
    if not pred:
        return {"status": "no_answer", "correct": False, "extracted": extracted, "message": "no answer found"}
    gold_parsed = parse_gold(gold)
    if not gold_parsed:
        return {"status": "error", "correct": False, "extracted": extracted, "message": "ground truth could not be parsed"}
    correct = bool(verify(gold_parsed, pred, timeout_seconds=None))
    return {"status": "ok", "correct": correct, "extracted": extracted, "message": ""}
