"""Strict reply parsers. A reply is one JSON object (optionally inside a single ``` code fence)
and nothing else; its fields are validated by a pydantic model in strict mode, so "4" or 4.0 is
not an integer score and an unknown key is an error. Nothing is coerced or guessed: a reply
that fails is retried once by the judge, then left unscored with its raw text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from harness.registry import Registry
from harness.types import stable_hash
from judges.prompt import JudgePrompt

_CODE_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```", re.S)


class ReplyError(ValueError):
    """A reply that is not the JSON object the prompt asked for."""


@dataclass(frozen=True)
class Parsed:
    """A parsed reply: `values` (dimension -> int, or {"verdict": "A"|"B"|"tie"})."""

    values: dict[str, Any]


class ReplyParser(Protocol):
    name: str
    version: int

    def schema(self, prompt: JudgePrompt) -> dict[str, Any]: ...

    def parse(self, text: str, prompt: JudgePrompt) -> Parsed: ...


def json_object(text: str) -> dict[str, Any]:
    """The reply as a JSON object: the whole text, or the whole inside of one code fence."""
    body = text.strip()
    m = _CODE_FENCE.fullmatch(body)
    if m:
        body = m.group(1).strip()
    if not body:
        raise ReplyError("empty reply")
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ReplyError(f"not a JSON object: {exc.msg} at char {exc.pos}") from None
    if not isinstance(obj, dict):
        raise ReplyError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _validate(model: type[BaseModel], obj: dict[str, Any]) -> dict[str, Any]:
    try:
        return model.model_validate(obj, strict=True).model_dump(by_alias=True, exclude_none=True)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(object)"
        raise ReplyError(f"field {loc}: {first['msg']}") from None


def _strict_config() -> ConfigDict:
    return ConfigDict(extra="forbid", strict=True, populate_by_name=False)


class PointwiseJSON:
    """{"doctor-like": 4, ..., "helpful": 3} with every dimension of the prompt, each an integer
    on the prompt's scale; an optional "reason" string."""

    name = "pointwise_json"
    version = 1

    def _model(self, prompt: JudgePrompt) -> type[BaseModel]:
        assert prompt.scale is not None
        low, high = prompt.scale
        fields: dict[str, Any] = {
            f"d{i}": (Annotated[int, Field(ge=low, le=high, alias=dim)], ...)
            for i, dim in enumerate(prompt.dimensions)
        }
        fields["reason"] = (str | None, None)
        model: type[BaseModel] = create_model("PointwiseReply", __config__=_strict_config(), **fields)
        return model

    def schema(self, prompt: JudgePrompt) -> dict[str, Any]:
        return self._model(prompt).model_json_schema(by_alias=True)

    def parse(self, text: str, prompt: JudgePrompt) -> Parsed:
        values = _validate(self._model(prompt), json_object(text))
        values.pop("reason", None)
        return Parsed(values)


class _PairwiseReply(BaseModel):
    model_config = _strict_config()

    verdict: Literal["A", "B", "tie"]
    reason: str | None = None


class PairwiseJSON:
    """{"verdict": "A" | "B" | "tie"} (A = the response shown first); an optional "reason"."""

    name = "pairwise_json"
    version = 1

    def schema(self, prompt: JudgePrompt) -> dict[str, Any]:
        return _PairwiseReply.model_json_schema()

    def parse(self, text: str, prompt: JudgePrompt) -> Parsed:
        values = _validate(_PairwiseReply, json_object(text))
        return Parsed({"verdict": values["verdict"]})


PARSERS: Registry[ReplyParser] = Registry("judge reply parser")
PARSERS.add(PointwiseJSON.name, PointwiseJSON())
PARSERS.add(PairwiseJSON.name, PairwiseJSON())


def parser_fingerprint(parser: ReplyParser, prompt: JudgePrompt) -> str:
    """Name, version and the exact schema the parser enforces for this prompt."""
    return stable_hash({"name": parser.name, "version": parser.version, "schema": parser.schema(prompt)})
