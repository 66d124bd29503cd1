"""The one exception the reward logic raises for bad user input; `api.py` maps it to HTTP."""

from __future__ import annotations

from sandbox.protocol import SUPPORTED_LANGUAGES

LANGUAGE_ALIASES: dict[str, str] = {
    "python": "python", "python3": "python", "py": "python", "py3": "python",
    "cpp": "cpp", "c++": "cpp", "cpp11": "cpp", "cpp14": "cpp", "cpp17": "cpp", "cpp20": "cpp", "cxx": "cpp",
}


class RewardInputError(ValueError):
    """User input the service refuses: `status_code` is 400, 413 or 422; `field` names the culprit."""

    def __init__(self, status_code: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status_code = status_code
        self.field = field
        self.message = message


def resolve_language(name: str | None, field: str = "language") -> str:
    """Canonical sandbox language for a name or alias; 400 listing the supported ones otherwise."""
    key = (name or "").strip().lower()
    if key in LANGUAGE_ALIASES and LANGUAGE_ALIASES[key] in SUPPORTED_LANGUAGES:
        return LANGUAGE_ALIASES[key]
    shown = ", ".join(sorted(LANGUAGE_ALIASES))
    raise RewardInputError(
        400, field, f"unsupported language {name!r}; supported: {', '.join(SUPPORTED_LANGUAGES)} (aliases: {shown})"
    )


def check_size(text: str | bytes, limit: int, field: str) -> None:
    """413 when `text` is over `limit` bytes (UTF-8)."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise RewardInputError(413, field, f"{size} bytes is over the limit of {limit} bytes")
