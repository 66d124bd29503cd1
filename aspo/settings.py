"""Loading component settings: one pydantic-settings model per component.

Precedence (highest first): explicit keyword overrides (CLI flags), environment
variables (each component's own prefix, e.g. ``ASPO_REWARD_PORT``), the YAML
file, then the defaults declared on the model, which live there and only there.
A validation error names the field, the value and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


class SettingsError(ValueError):
    """Settings could not be loaded; the message says which field and why."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"settings file not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise SettingsError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid settings ({source}):"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        lines.append(f"  {loc}: {e['msg']} (got {shown[:80]})")
    return "\n".join(lines)


def env_names(cls: type[BaseSettings], field: str) -> set[str]:
    """Environment variable names (lower case) that set ``field``: the prefixed
    name, or the field's validation aliases when it has them (e.g. REDIS_URL)."""
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return {str(c).lower() for c in alias.choices if isinstance(c, str)}
    if isinstance(alias, str):
        return {alias.lower()}
    return {f"{cls.model_config.get('env_prefix') or ''}{field}".lower()}


def load_settings(
    cls: type[S],
    yaml_path: str | Path | None = None,
    section: str | None = None,
    **overrides: Any,
) -> S:
    """Build ``cls`` from YAML (optionally one ``section`` of it), env vars and overrides.

    Env vars beat YAML values: pydantic-settings gives init kwargs priority over
    the environment, so YAML keys that an env var also sets are dropped first.
    """
    data: dict[str, Any] = {}
    if yaml_path is not None:
        data = read_yaml(yaml_path)
        if section is not None:
            data = data.get(section) or {}
            if not isinstance(data, dict):
                raise SettingsError(f"{yaml_path}: section {section!r} must be a mapping")
    env_keys = {k.lower() for k in os.environ}
    data = {k: v for k, v in data.items() if not (env_names(cls, k) & env_keys)}
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**data)
    except ValidationError as err:
        raise SettingsError(format_validation_error(err, str(yaml_path or "env/flags"))) from None
