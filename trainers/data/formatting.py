"""Records -> what the trainers read.

- CP: raw text, tokenised with an end-of-text token after each document and packed into blocks
  of `block_size` tokens (trl's `pack_dataset`, "wrapped": documents run across blocks).
- IFT: chats rendered with the base model's own chat template; labels are -100 everywhere but
  on the assistant replies (their text and the token that ends the turn), so the loss is on
  responses only, for single QA pairs and multi-turn chats alike.
- QA pairs / chats and knowledge-graph triples -> plain text, for CP.
- HA: conversational preference rows for trl (DPO, reward), or unpaired rows (KTO).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
from harness.types import Message
from trainers.data.records import ChatRecord, PreferenceRecord, TextRecord, TrainRecord

IGNORE_INDEX = -100


def _dicts(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _encode_chat(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    # the rendered template already holds its special tokens; add none of our own
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_features(messages: Sequence[Message], tokenizer: Any,
                  max_length: int | None = None) -> dict[str, list[int]] | None:
    """input_ids of the chat in the tokenizer's template, and labels that keep only the tokens
    of each assistant reply. The reply of turn i is what the conversation through turn i adds to
    the conversation up to turn i with the generation prompt ("<|im_start|>assistant\\n"), up to
    and including the template's end-of-turn token (the separator after it is not the reply).
    Returns None when no reply token is left (truncation to `max_length`, or a chat whose only
    assistant turn opens it)."""
    from trl.data_utils import common_prefix_length

    if not any(m.role == "assistant" for m in messages):
        raise HarnessError("a chat for instruction tuning needs at least one assistant turn")
    msgs = _dicts(messages)
    input_ids = _encode_chat(tokenizer, msgs, False)
    labels = [IGNORE_INDEX] * len(input_ids)
    special = set(tokenizer.all_special_ids)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant" or i == 0:  # a reply needs something before it to answer
            continue
        # Common prefixes, not lengths: a template that renders a turn differently alone would
        # otherwise shift the mask (trl's SFT trainer guards the same way).
        start = common_prefix_length(_encode_chat(tokenizer, msgs[:i], True), input_ids)
        end = common_prefix_length(_encode_chat(tokenizer, msgs[:i + 1], False), input_ids)
        reply = input_ids[start:end]
        ends = [k for k, tok in enumerate(reply) if tok in special]
        if ends:
            end = start + ends[-1] + 1
        for k in range(start, end):
            labels[k] = input_ids[k]
    if max_length is not None and len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(x == IGNORE_INDEX for x in labels):
        return None
    return {"input_ids": input_ids, "labels": labels}


def chat_to_text(messages: Sequence[Message]) -> str:
    """A QA pair as "Question: ...\\nAnswer: ...", a longer chat as "User: ..." / "Assistant: ..."
    lines; system messages are left out."""
    turns = [m for m in messages if m.role != "system"]
    if len(turns) == 2 and turns[0].role == "user" and turns[1].role == "assistant":
        return f"Question: {turns[0].content}\nAnswer: {turns[1].content}"
    return "\n".join(f"{m.role.capitalize()}: {m.content}" for m in turns)


def as_text_record(rec: TrainRecord) -> TextRecord:
    """Any record as plain text for CP (a preference pair keeps its chosen answer only)."""
    if isinstance(rec, TextRecord):
        return rec
    if isinstance(rec, ChatRecord):
        return TextRecord(rec.id, rec.source, chat_to_text(rec.messages))
    return TextRecord(rec.id, rec.source, chat_to_text((*rec.prompt, Message("assistant", rec.chosen))))


def pack_texts(texts: Sequence[str], tokenizer: Any, block_size: int) -> Any:
    """A datasets.Dataset of blocks of `block_size` tokens (input_ids, labels): each text ends
    with the end-of-text token; the last block of a packing batch may be shorter."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    eos = tokenizer.eos_token_id
    if eos is None:
        raise HarnessError("the tokenizer has no end-of-text token to separate documents")
    ids = [[*tokenizer(t, add_special_tokens=False)["input_ids"], eos] for t in texts]
    ds = Dataset.from_dict({"input_ids": ids, "labels": ids})
    return pack_dataset(ds, block_size, strategy="wrapped")


def preference_row(rec: PreferenceRecord) -> dict[str, Any]:
    """trl's conversational preference format (DPO and reward trainers apply the template)."""
    return {"prompt": _dicts(rec.prompt), "chosen": [{"role": "assistant", "content": rec.chosen}],
            "rejected": [{"role": "assistant", "content": rec.rejected}]}


def unpaired_rows(records: Sequence[PreferenceRecord]) -> list[dict[str, Any]]:
    """KTO's unpaired format, chosen and rejected interleaved so that every batch holds both
    labels (trl's KTO draws its KL completions from neighbours in a sequential batch)."""
    rows: list[dict[str, Any]] = []
    for rec in records:
        prompt = _dicts(rec.prompt)
        rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": rec.chosen}], "label": True})
        rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": rec.rejected}],
                     "label": False})
    return rows
