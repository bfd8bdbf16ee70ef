"""Training records: the three shapes the stages consume, plus the text views the filters read.

- TextRecord: raw text for continued pretraining (CP).
- ChatRecord: a conversation (QA pair or multi-turn chat) for instruction tuning (IFT).
- PreferenceRecord: a prompt with a chosen and a rejected answer for human alignment (HA).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from harness.types import Message


@dataclass(frozen=True)
class TextRecord:
    id: str
    source: str
    text: str


@dataclass(frozen=True)
class ChatRecord:
    id: str
    source: str
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class PreferenceRecord:
    id: str
    source: str
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str


TrainRecord = TextRecord | ChatRecord | PreferenceRecord

RECORD_KINDS: dict[type, str] = {TextRecord: "text", ChatRecord: "chat", PreferenceRecord: "preference"}


def record_kind(rec: TrainRecord) -> str:
    return RECORD_KINDS[type(rec)]


def _join(messages: tuple[Message, ...]) -> str:
    return "\n".join(m.content for m in messages)


def quality_text(rec: TrainRecord) -> str:
    """What the quality filter judges: the text a model learns from (never a rejected answer)."""
    if isinstance(rec, TextRecord):
        return rec.text
    if isinstance(rec, ChatRecord):
        return _join(rec.messages)
    return f"{_join(rec.prompt)}\n{rec.chosen}"


def full_text(rec: TrainRecord) -> str:
    """Every string of the record: what de-duplication and the leakage check read."""
    if isinstance(rec, PreferenceRecord):
        return f"{_join(rec.prompt)}\n{rec.chosen}\n{rec.rejected}"
    return quality_text(rec)


def map_strings(rec: TrainRecord, fn: Callable[[str], str]) -> TrainRecord:
    """The record with `fn` applied to every string a model would read (PII masking)."""
    if isinstance(rec, TextRecord):
        return replace(rec, text=fn(rec.text))
    if isinstance(rec, ChatRecord):
        return replace(rec, messages=tuple(Message(m.role, fn(m.content)) for m in rec.messages))
    return replace(rec, prompt=tuple(Message(m.role, fn(m.content)) for m in rec.prompt),
                   chosen=fn(rec.chosen), rejected=fn(rec.rejected))


def record_to_json(rec: TrainRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rec.id, "source": rec.source, "kind": record_kind(rec)}
    if isinstance(rec, TextRecord):
        out["text"] = rec.text
    elif isinstance(rec, ChatRecord):
        out["messages"] = [{"role": m.role, "content": m.content} for m in rec.messages]
    else:
        out["prompt"] = [{"role": m.role, "content": m.content} for m in rec.prompt]
        out["chosen"], out["rejected"] = rec.chosen, rec.rejected
    return out
