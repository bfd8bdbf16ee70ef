"""Rubric grader requests and replies (HealthBench): pure functions, no I/O, no model calls.

One grader request per (response, rubric item). Two prompt forms:

- our YAML prompt file (`tasks/prompts/rubric_grader.yaml`, `kind: rubric`): system and user
  templates filled with string.Template ($conversation, $response, $rubric_item, $nonce), the
  conversation and the response fenced as untrusted text between marker lines whose nonce
  hashes both texts (the same marker format as judges.prompt.Fence, so
  judges.prompt.fenced_blocks reads them back); optional worked examples sent first;
- upstream's plain-text template (any other file containing `<<conversation>>` and
  `<<rubric_item>>`, e.g. simple-evals' GRADER_TEMPLATE): filled exactly as upstream does (the
  whole conversation with the response as "role: content" turns joined by blank lines, the
  item as "[points] criterion"), sent as one user message after upstream's system message, for
  numbers comparable with upstream.

A reply must be one JSON object, optionally inside one ``` code fence, with exactly the keys
"explanation" (a string) and "criteria_met" (true or false). Anything else is a parse failure
with its reason; the caller asks once more with `retry_messages` and, if that fails too, leaves
the item ungraded (never "not met"). The prompt text's sha256, the parser's name and version and
the generation settings are the grader's identity (`grader_identity`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from string import Template
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import ConfigError
from harness.scoring.rubric import RubricItem
from harness.types import GenerationConfig, Message, stable_hash

PARSER_NAME = "rubric_criteria_met_json"
PARSER_VERSION = 1
UPSTREAM_CONVERSATION = "<<conversation>>"
UPSTREAM_RUBRIC_ITEM = "<<rubric_item>>"
UPSTREAM_MAX_TOKENS = 2048  # simple-evals' grader sampler (ChatCompletionSampler, max_tokens=2048)
UPSTREAM_SYSTEM = "You are a helpful assistant."  # its system message (OPENAI_SYSTEM_MESSAGE_API)
DEFAULT_REMINDER = ('That was not a valid reply. Reply with only the JSON object {"explanation": "<why>", '
                    '"criteria_met": true or false}, nothing else.')
# The reply parse_reply accepts, as a JSON Schema: sent to servers that enforce it
# (`--grader-structured`), so a small grader cannot fail to produce it. The explanation is capped
# so that the object closes within the reply's token budget (a small model otherwise explains on
# until max_tokens cuts the string: measured on the default model through llama.cpp).
REPLY_SCHEMA = {"type": "object", "properties": {"explanation": {"type": "string", "maxLength": 300},
                                                 "criteria_met": {"type": "boolean"}},
                "required": ["explanation", "criteria_met"], "additionalProperties": False}
_FIELDS = frozenset({"conversation", "response", "rubric_item", "nonce"})
_REQUIRED = frozenset({"conversation", "response", "rubric_item"})


class GraderExample(BaseModel):
    """A worked example sent as an earlier user / assistant exchange."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: dict[str, str] = Field(description="conversation (as text), response, rubric_item ('[points] text').")
    reply: str = Field(description="The reply the grader should give; it must pass parse_reply.")


class GraderPrompt(BaseModel):
    """A rubric grader prompt: ours (YAML, fenced) or upstream's plain-text template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["rubric"] = Field(description="Always 'rubric' (the file serves the rubric grader).")
    version: int = Field(ge=1, description="Bump when the wording changes.")
    user: str = Field(description="User message template.")
    system: str = Field(default="", description="System message; empty for none.")
    reminder: str = Field(default=DEFAULT_REMINDER, description="Follow-up sent once when a reply does not parse.")
    max_tokens: int = Field(default=384, ge=1, description="Default reply length limit.")
    examples: tuple[GraderExample, ...] = Field(default=(), description="Worked examples, sent before the request.")
    style: Literal["fenced", "upstream"] = Field(default="fenced", description="How the template is filled.")
    name: str = Field(default="", description="File name (filled in on load).")
    content_hash: str = Field(default="", description="sha256 of the file's text (filled in on load).")


def parse_grader_prompt(text: str, source: str) -> GraderPrompt:
    """A prompt from a file's text. `source` (a file name or path) picks the form: .yaml / .yml
    is our YAML prompt, anything else an upstream-style plain-text template."""
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    content_hash = stable_hash(text)
    if not name.endswith((".yaml", ".yml")):
        missing = [m for m in (UPSTREAM_CONVERSATION, UPSTREAM_RUBRIC_ITEM) if m not in text]
        if missing:
            raise ConfigError(f"a plain-text grader template needs the markers {' and '.join(missing)} "
                              "(or give a .yaml prompt file)", file=source)
        # upstream strips its template; the hash covers the file's full text
        return GraderPrompt(kind="rubric", version=1, user=text.strip(), system=UPSTREAM_SYSTEM, style="upstream",
                            max_tokens=UPSTREAM_MAX_TOKENS, name=name, content_hash=content_hash)
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=source) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping", file=source)
    if "style" in data or "name" in data or "content_hash" in data:
        raise ConfigError("style, name and content_hash are not file keys", file=source)
    try:
        prompt = GraderPrompt.model_validate({**data, "name": name, "content_hash": content_hash})
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise ConfigError(f"{first['msg']} (got {first.get('input')!r:.80})", file=source, key=loc) from None
    _check_template(prompt.user, source, "user", require=True)
    for key, template in (("system", prompt.system), ("reminder", prompt.reminder)):
        _check_template(template, source, key, require=False)
    for k, ex in enumerate(prompt.examples):
        if set(ex.fields) != _REQUIRED:
            raise ConfigError(f"example fields must be {sorted(_REQUIRED)}, got {sorted(ex.fields)}", file=source,
                              key=f"examples.{k}.fields")
        reply = parse_reply(ex.reply)
        if reply.met is None:
            raise ConfigError(f"example reply does not pass the parser: {reply.error}", file=source,
                              key=f"examples.{k}.reply")
    return prompt


def _check_template(template: str, source: str, key: str, *, require: bool) -> None:
    t = Template(template)
    if not t.is_valid():
        raise ConfigError("invalid $-template (a lone $ must be written $$)", file=source, key=key)
    names = set(t.get_identifiers())
    unknown = names - _FIELDS if require else names
    if unknown:
        raise ConfigError(f"template field(s) {sorted(unknown)} are not available", file=source, key=key)
    if require and not _REQUIRED <= names:
        missing = ", ".join(f"${n}" for n in sorted(_REQUIRED - names))
        raise ConfigError(f"the user template must use {missing}", file=source, key=key)


# -- rendering -------------------------------------------------------------------------------

_FENCE_LABELS = ("CONVERSATION", "RESPONSE")


def conversation_text(conversation: Sequence[Message]) -> str:
    """Upstream's rendering of turns: "role: content", joined by blank lines."""
    return "\n\n".join(f"{m.role}: {m.content}" for m in conversation)


def _nonce(texts: Sequence[str]) -> str:
    return "U" + stable_hash(list(texts))[:12]  # judges.prompt.Fence's nonce


def _fence(nonce: str, label: str, text: str) -> str:
    while nonce in text:
        text = text.replace(nonce, "")
    return f"<<< BEGIN {label} {nonce}\n{text}\n<<< END {label} {nonce}"


def _fenced_fields(conversation: str, response: str, rubric_item: str) -> dict[str, str]:
    # The nonce hashes the fenced texts only (the rubric item is the task's, not untrusted): the
    # requests of one response's items then share their prefix, which servers cache.
    nonce = _nonce([conversation, response])
    return {"nonce": nonce, "conversation": _fence(nonce, _FENCE_LABELS[0], conversation),
            "response": _fence(nonce, _FENCE_LABELS[1], response), "rubric_item": rubric_item}


def _fill(prompt: GraderPrompt, key: str, template: str, fields: Mapping[str, str]) -> str:
    try:
        return Template(template).substitute(fields)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"template field {exc} is not available", file=prompt.name, key=key) from None


def grader_messages(prompt: GraderPrompt, conversation: Sequence[Message], response: str,
                    item: RubricItem | str) -> tuple[Message, ...]:
    """The grader's chat messages for one (response, rubric item). `conversation` is the
    prompt the model under test answered (ending on a user turn); `response` its reply. A
    RubricItem shows as "[points] criterion"; a string is used as it is (upstream's
    meta-evaluation rows carry the rubric text alone)."""
    item_text = item if isinstance(item, str) else str(item)
    if prompt.style == "upstream":
        convo = conversation_text([*conversation, Message("assistant", response)])
        text = prompt.user.replace(UPSTREAM_CONVERSATION, convo).replace(UPSTREAM_RUBRIC_ITEM, item_text)
        return ((Message("system", prompt.system),) if prompt.system else ()) + (Message("user", text),)
    out = [Message("system", prompt.system)] if prompt.system else []
    for ex in prompt.examples:
        f = ex.fields
        out += [Message("user", _fill(prompt, "user", prompt.user,
                                      _fenced_fields(f["conversation"], f["response"], f["rubric_item"]))),
                Message("assistant", ex.reply)]
    fields = _fenced_fields(conversation_text(conversation), response, item_text)
    out.append(Message("user", _fill(prompt, "user", prompt.user, fields)))
    return tuple(out)


def retry_messages(messages: Sequence[Message], bad_reply: str, prompt: GraderPrompt) -> tuple[Message, ...]:
    """The follow-up request after a reply that did not parse: the conversation so far, the
    failed reply and the prompt's reminder (a new request, so the cache does not replay it)."""
    return (*messages, Message("assistant", bad_reply), Message("user", prompt.reminder))


# -- replies ---------------------------------------------------------------------------------

_CODE_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)\n?[ \t]*```", re.S)


@dataclass(frozen=True)
class GraderReply:
    """`met` None = the reply did not parse (`error` says why)."""

    met: bool | None
    explanation: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def parse_reply(text: str) -> GraderReply:
    """Strict: the whole reply (or the whole inside of one code fence) is {"explanation": str,
    "criteria_met": bool}; no other key, no duplicate key, no "true" string for a boolean."""
    body = text.strip()
    m = _CODE_FENCE.fullmatch(body)
    if m:
        body = m.group(1).strip()
    if not body:
        return GraderReply(None, error="empty reply")
    try:
        obj = json.loads(body, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        return GraderReply(None, error=f"duplicate key {exc}")
    except json.JSONDecodeError as exc:
        return GraderReply(None, error=f"not a JSON object: {exc.msg} at char {exc.pos}")
    if not isinstance(obj, dict):
        return GraderReply(None, error=f"expected a JSON object, got {type(obj).__name__}")
    extra = sorted(set(obj) - {"explanation", "criteria_met"})
    if extra:
        return GraderReply(None, error=f"unexpected key(s) {', '.join(extra)}")
    if "criteria_met" not in obj:
        return GraderReply(None, error="missing criteria_met")
    met = obj["criteria_met"]
    if not isinstance(met, bool):
        return GraderReply(None, error=f"criteria_met must be true or false, got {met!r:.40}")
    explanation = obj.get("explanation")
    if not isinstance(explanation, str):
        return GraderReply(None, error="missing explanation" if explanation is None else
                           f"explanation must be a string, got {type(explanation).__name__}")
    return GraderReply(met, explanation)


# -- identity --------------------------------------------------------------------------------

def grader_identity(prompt: GraderPrompt, model_fingerprint: str, generation: GenerationConfig) -> dict[str, Any]:
    """What defines a grader: its model, the prompt text's hash, the parser, the generation."""
    return {
        "model": model_fingerprint,
        "prompt": {"name": prompt.name, "version": prompt.version, "style": prompt.style,
                   "sha256": prompt.content_hash},
        "parser": {"name": PARSER_NAME, "version": PARSER_VERSION},
        "generation": asdict(generation),
    }


def grader_fingerprint(prompt: GraderPrompt, model_fingerprint: str, generation: GenerationConfig) -> str:
    return stable_hash(grader_identity(prompt, model_fingerprint, generation))
