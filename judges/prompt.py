"""Judge prompt files (judges/prompts/*.yaml) and the fencing of untrusted text.

A prompt file is data: yaml.safe_load, validated by pydantic (unknown keys refused), templates
filled with string.Template so braces and dollar signs in answers are never re-read as fields.
Every piece of text under judgement (the request, the answers, a reference) is fenced between
marker lines carrying a nonce derived from all of that text; the nonce is then removed from the
text, so no answer can close its fence or forge another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import ConfigError
from harness.types import Message, stable_hash

BUILTIN = {"pointwise": "pointwise_medical", "pairwise": "pairwise"}


class Example(BaseModel):
    """A worked example, sent as an earlier user / assistant exchange (small judges follow
    the reply format far more often with one). `fields` fill the user template like a real
    request's untrusted texts (and are fenced the same way)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[str, str] = Field(description="The protocol's text fields, e.g. request, first, second.")
    reply: str = Field(description="The reply the judge should give; it must pass the parser.")


class JudgePrompt(BaseModel):
    """One judge prompt file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["pointwise", "pairwise"] = Field(description="Which protocol the prompt serves.")
    version: int = Field(ge=1, description="Bump when the wording changes.")
    parser: str = Field(description="Registered reply parser (judges.parse.PARSERS).")
    system: str = Field(default="", description="System message; empty for none.")
    user: str = Field(description="User message template ($-fields).")
    reminder: str = Field(description="Follow-up sent once when a reply does not parse.")
    reference: str = Field(default="", description="Pointwise: block added when a reference answer is given.")
    max_tokens: int = Field(default=128, ge=1, description="Default reply length limit.")
    scale: tuple[int, int] | None = Field(default=None, description="Pointwise: lowest and highest score.")
    dimensions: dict[str, str] = Field(default_factory=dict, description="Pointwise: name -> definition.")
    examples: tuple[Example, ...] = Field(default=(), description="Worked examples, sent before the request.")
    name: str = Field(default="", description="File stem (filled in on load).")
    content_hash: str = Field(default="", description="sha256 of the file's text (filled in on load).")

    @model_validator(mode="after")
    def _pointwise_needs_scale(self) -> JudgePrompt:
        if self.kind == "pointwise":
            if not self.dimensions or self.scale is None or self.scale[0] >= self.scale[1]:
                raise ValueError("a pointwise prompt needs dimensions and a scale [low, high] with low < high")
        return self

    def messages(self, fields: Mapping[str, str],
                 examples: Sequence[tuple[Mapping[str, str], str]] = ()) -> tuple[Message, ...]:
        """The request's chat messages: system, each example's (user, assistant) exchange, the
        user message. Every field the template names must be given."""
        out = [Message("system", self.system)] if self.system else []
        for ex_fields, reply in examples:
            out += [Message("user", _fill(self.user, {**self._fixed_fields(), **ex_fields}, self.name, "examples")),
                    Message("assistant", reply)]
        out.append(Message("user", _fill(self.user, {**self._fixed_fields(), **fields}, self.name, "user")))
        return tuple(out)

    def reminder_text(self) -> str:
        return _fill(self.reminder, self._fixed_fields(), self.name, "reminder")

    def reference_block(self, fenced_reference: str) -> str:
        return _fill(self.reference, {**self._fixed_fields(), "fenced_reference": fenced_reference},
                     self.name, "reference")

    def _fixed_fields(self) -> dict[str, str]:
        if self.kind != "pointwise" or self.scale is None:
            return {}
        low, high = self.scale
        schema = "{" + ", ".join(f'"{d}": N' for d in self.dimensions) + "}"
        dims = "\n".join(f"- {d}: {text}" for d, text in self.dimensions.items())
        return {"low": str(low), "high": str(high), "schema": schema, "dimensions": dims}


def _fill(template: str, values: Mapping[str, str], name: str, key: str) -> str:
    try:
        return Template(template).substitute(values)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"template field {exc} is not available", file=name, key=key) from None


def load_prompt(name_or_path: str | Path) -> JudgePrompt:
    """A built-in prompt by name ("pointwise_medical", "pairwise", or the protocol name) or a
    YAML file by path."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError("no such judge prompt file", file=text_name)
        text, stem, where = path.read_text(encoding="utf-8"), path.stem, str(path)
    else:
        stem = BUILTIN.get(text_name, text_name)
        res = resources.files("judges") / "prompts" / f"{stem}.yaml"
        if not res.is_file():
            known = sorted(p.name.removesuffix(".yaml") for p in (resources.files("judges") / "prompts").iterdir()
                           if p.name.endswith(".yaml"))
            raise ConfigError(f"unknown judge prompt {text_name!r} (built in: {', '.join(known)}; or a .yaml path)")
        text, where = res.read_text(encoding="utf-8"), f"judges/prompts/{stem}.yaml"
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=where) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping", file=where)
    try:
        return JudgePrompt.model_validate({**data, "name": stem, "content_hash": stable_hash(text)})
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ConfigError(f"{first['msg']} (got {first.get('input')!r})", file=where, key=loc) from None


class Fence:
    """Marker lines for untrusted text. The nonce hashes all the texts of one request, so it
    is stable (requests stay cacheable) yet unknown to whoever wrote them; any copy of it in
    a text is removed anyway."""

    def __init__(self, texts: list[str]):
        self.nonce = "U" + stable_hash(texts)[:12]

    def clean(self, text: str) -> str:
        while self.nonce in text:
            text = text.replace(self.nonce, "")
        return text

    def __call__(self, label: str, text: str) -> str:
        return f"<<< BEGIN {label} {self.nonce}\n{self.clean(text)}\n<<< END {label} {self.nonce}"


def render_conversation(prompt: Any) -> str:
    """A run's stored prompt (a context string or a list of chat messages) as plain text."""
    if isinstance(prompt, list):
        lines = []
        for m in prompt:
            if isinstance(m, Mapping):
                role = {"user": "PATIENT/USER", "assistant": "DOCTOR/ASSISTANT"}.get(str(m.get("role")),
                                                                                      str(m.get("role")).upper())
                lines.append(f"{role}: {m.get('content', '')}")
            else:
                lines.append(str(m))
        return "\n".join(lines)
    return "" if prompt is None else str(prompt)


_FENCE_LINE = re.compile(r"^<<< (BEGIN|END) ([A-Z ]+) (U[0-9a-f]{12})$", re.M)


def fenced_blocks(text: str) -> dict[str, str]:
    """label -> fenced text, read back from a rendered prompt (for tests and scripted judges).
    The first marker line is a real one (real fences open before their text), so its nonce
    tells the real markers from forged ones."""
    first = _FENCE_LINE.search(text)
    if first is None:
        return {}
    nonce = first.group(3)
    out: dict[str, str] = {}
    starts: dict[str, int] = {}
    for m in _FENCE_LINE.finditer(text):
        kind, label = m.group(1), m.group(2)
        if m.group(3) != nonce:
            continue
        if kind == "BEGIN":
            starts[label] = m.end() + 1
        elif label in starts:
            out[label] = text[starts.pop(label):m.start() - 1]
    return out
