"""The strict-model base and the one error formatter for every YAML we read (tasks, suites,
recipes, data configs, judge prompts): unknown keys are refused, and an error is one line that
names the file, the key and the bad value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import ConfigError, HarnessError


class StrictModel(BaseModel):
    """A config model that refuses unknown keys; immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def describe_validation_error(err: ValidationError) -> tuple[str, str]:
    """(dotted key, "message (got VALUE) (+N more)") of a pydantic error's first problem."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    value = first.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return loc, f"{first['msg']}{shown}{more}"


def config_error(err: ValidationError, *, file: str | None = None, key_prefix: str = "",
                 context: str = "") -> ConfigError:
    """The ConfigError of a validation error: `file: [context] key: message`."""
    loc, message = describe_validation_error(err)
    key = f"{key_prefix}{loc}"
    if context:
        return ConfigError(f"{context}{key}: {message}", file=file)
    return ConfigError(message, file=file, key=key)


def read_yaml(path: Path) -> Any:
    """yaml.safe_load of a file (no tags, no code), with errors that name the file and line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}invalid YAML: {problem}", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from None


def read_json(path: Path) -> Any:
    """json.loads of a whole file, with errors that name the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
