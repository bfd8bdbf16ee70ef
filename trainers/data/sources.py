"""Readers: one data file (or one harness task split) -> training records. Recipes name them.

Readers for the shared data (MANIFEST.md): MedQuAD text and PubTator abstracts (CP), ShareGPT
chats, Self-BioRAG instruction records and doctor-patient dialogues (IFT), preference pairs
(HA), knowledge-graph triples (CP), and the train splits of the harness's own tasks, read
through the harness loaders (MCQA as QA pairs or as preference pairs).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.registry import Registry
from harness.types import Message, Sample
from trainers.data.config import DataSourceSpec
from trainers.data.records import ChatRecord, PreferenceRecord, TextRecord, TrainRecord


@dataclass(frozen=True)
class ReadContext:
    """Where relative paths point: the data folder first, then the recipe's own folder (small
    files shipped beside a recipe)."""

    data_dir: Path | None
    recipe_dir: Path | None = None

    def path(self, spec: DataSourceSpec) -> Path:
        assert spec.path is not None
        path = Path(spec.path).expanduser()
        if path.is_absolute():
            candidates = [path]
        else:
            candidates = [root / path for root in (self.data_dir, self.recipe_dir) if root is not None]
            if not candidates:
                raise HarnessError(f"reader {spec.reader!r}: {spec.path} is relative but no data folder is set "
                                   "(--data-dir or data_dir: in the recipe)")
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise HarnessError(f"reader {spec.reader!r}: data file not found: {' or '.join(map(str, candidates))}")


Reader = Callable[[DataSourceSpec, ReadContext], Iterator[TrainRecord]]
READERS: Registry[Reader] = Registry("data reader")


def _jsonl(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise HarnessError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None


def _field(rec: Mapping[str, Any], path: Path, lineno: int, *names: str) -> Any:
    for name in names:
        if name in rec:
            return rec[name]
    raise HarnessError(f"{path}:{lineno}: missing field {' or '.join(repr(n) for n in names)}")


@READERS.register("jsonl_text")
def jsonl_text(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """JSON Lines with a text field (option `field`, default "text"; `id_field`, default "doc_id")."""
    path = ctx.path(spec)
    text_field = spec.options.get("field", "text")
    id_field = spec.options.get("id_field", "doc_id")
    for lineno, rec in _jsonl(path):
        yield TextRecord(f"{path.stem}:{rec.get(id_field, lineno)}", spec.reader,
                         str(_field(rec, path, lineno, text_field)))


@READERS.register("pubtator")
def pubtator(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """PubTator documents: title and abstract joined (mention lines are skipped)."""
    path = ctx.path(spec)
    docs: dict[str, dict[str, str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("|", 2)
            if len(parts) == 3 and parts[1] in ("t", "a"):
                docs.setdefault(parts[0], {})[parts[1]] = parts[2].strip()
    for pmid, doc in docs.items():
        yield TextRecord(f"pmid:{pmid}", spec.reader, "\n".join(x for x in (doc.get("t"), doc.get("a")) if x))


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system"}


@READERS.register("sharegpt")
def sharegpt(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """ShareGPT chats: {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}."""
    path = ctx.path(spec)
    for lineno, rec in _jsonl(path):
        turns = _field(rec, path, lineno, "conversations")
        messages = []
        for turn in turns:
            role = _SHAREGPT_ROLES.get(turn.get("from", ""))
            if role is None:
                raise HarnessError(f"{path}:{lineno}: unknown speaker {turn.get('from')!r}")
            messages.append(Message(role, str(turn.get("value", ""))))
        yield ChatRecord(f"{path.stem}:{rec.get('id', lineno)}", spec.reader, tuple(messages))


@READERS.register("messages_jsonl")
def messages_jsonl(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """Chats in the OpenAI / trl shape: {"messages": [{"role": ..., "content": ...}, ...]}."""
    path = ctx.path(spec)
    for lineno, rec in _jsonl(path):
        messages = tuple(Message(str(m["role"]), str(m["content"]))
                         for m in _field(rec, path, lineno, "messages"))
        yield ChatRecord(f"{path.stem}:{rec.get('id', lineno)}", spec.reader, messages)


@READERS.register("selfbiorag")
def selfbiorag(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """Self-BioRAG instruction records: instruction + instances.input -> instances.output."""
    path = ctx.path(spec)
    for lineno, rec in _jsonl(path):
        inst = _field(rec, path, lineno, "instances")
        prompt = "\n\n".join(x for x in (rec.get("instruction", "").strip(), str(inst["input"]).strip()) if x)
        yield ChatRecord(f"{path.stem}:{rec.get('id', lineno)}", spec.reader,
                         (Message("user", prompt), Message("assistant", str(inst["output"]).strip())))


_SPEAKER = re.compile(r"^\s*(?:\[(doctor|patient)\]|(doctor|patient|guest_family|guest_clinician)\s*:)\s*",
                      re.I | re.M)
DIALOGUE_SYSTEM = "You are a physician talking with a patient during a consultation."


def dialogue_messages(dialogue: str, system: str = DIALOGUE_SYSTEM) -> tuple[Message, ...]:
    """"Doctor: ..." / "[patient] ..." turns -> chat: the doctor is the assistant, everyone
    else the user; consecutive turns of one side are joined; trailing user turns are dropped."""
    marks = list(_SPEAKER.finditer(dialogue))
    turns: list[Message] = []
    for i, m in enumerate(marks):
        speaker = (m.group(1) or m.group(2)).lower()
        end = marks[i + 1].start() if i + 1 < len(marks) else len(dialogue)
        text = " ".join(dialogue[m.end():end].split())
        if not text:
            continue
        role = "assistant" if speaker == "doctor" else "user"
        if turns and turns[-1].role == role:
            turns[-1] = Message(role, f"{turns[-1].content} {text}")
        else:
            turns.append(Message(role, text))
    while turns and turns[-1].role != "assistant":
        turns.pop()
    return (Message("system", system), *turns) if turns else ()


@READERS.register("dialogue_csv")
def dialogue_csv(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """Doctor-patient dialogues in a CSV column (MTS-Dialog "Doctor:"/"Patient:", ACI-Bench
    "[doctor]"/"[patient]"): multi-turn chats with the doctor as the assistant."""
    path = ctx.path(spec)
    column = spec.options.get("column", "dialogue")
    id_column = spec.options.get("id_column")
    system = spec.options.get("system", DIALOGUE_SYSTEM)
    with path.open(encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 1):
            if column not in row:
                raise HarnessError(f"{path}: no column {column!r} (columns: {', '.join(row)})")
            messages = dialogue_messages(row[column], system)
            if messages:
                rid = row.get(id_column) if id_column else None
                yield ChatRecord(f"{path.stem}:{rid or n}", spec.reader, messages)


@READERS.register("preference_jsonl")
def preference_jsonl(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """Preference pairs: question|prompt, response_chosen|chosen, response_rejected|rejected."""
    path = ctx.path(spec)
    for lineno, rec in _jsonl(path):
        question = str(_field(rec, path, lineno, "question", "prompt"))
        yield PreferenceRecord(
            f"{path.stem}:{rec.get('id', lineno)}", spec.reader, (Message("user", question),),
            str(_field(rec, path, lineno, "response_chosen", "chosen")),
            str(_field(rec, path, lineno, "response_rejected", "rejected")),
        )


def verbalise_triple(head: str, relation: str, tail: str, templates: Mapping[str, str]) -> str:
    template = templates.get(relation, "{head} {relation} {tail}.")
    return template.format(head=head, relation=relation.replace("_", " "), tail=tail)


@READERS.register("triples_jsonl")
def triples_jsonl(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """Knowledge-graph triples {head, relation, tail} -> plain text: one paragraph per head
    entity, one sentence per triple (option `templates`: relation -> "{head} ... {tail}.")."""
    path = ctx.path(spec)
    templates: Mapping[str, str] = spec.options.get("templates", {})
    by_head: dict[str, list[str]] = {}
    for lineno, rec in _jsonl(path):
        head, rel, tail = (str(_field(rec, path, lineno, k)) for k in ("head", "relation", "tail"))
        by_head.setdefault(head, []).append(verbalise_triple(head, rel, tail, templates))
    for head, sentences in by_head.items():
        yield TextRecord(f"{path.stem}:{head}", spec.reader, " ".join(sentences))


# --- the harness's own tasks -------------------------------------------------------------------

def _task_samples(spec: DataSourceSpec, ctx: ReadContext) -> tuple[str, list[Sample]]:
    from harness.data.sources import load_split
    from harness.run.catalog import load_catalog

    assert spec.task is not None
    task = load_catalog().task(spec.task)
    if spec.split == task.eval_split:
        raise HarnessError(f"reader {spec.reader!r}: {spec.task}'s split {spec.split!r} is the one the harness "
                           "scores; train on another split")
    source = spec.options.get("source", "local" if ctx.data_dir is not None else "bundled")
    return task.format, load_split(task, spec.split, source, ctx.data_dir)


def _mcqa_parts(fmt_name: str, sample: Sample) -> tuple[str, list[str]]:
    """The harness prompt of an MCQA sample and the answer text of each choice."""
    from harness.data.adapters import LETTERS
    from harness.protocols.formats import FORMATS

    fmt = FORMATS.get(fmt_name)
    if not sample.choices or not isinstance(sample.target, int):
        raise HarnessError(f"sample {sample.id}: the benchmark readers need MCQA samples")
    prompt = fmt.description(sample) + fmt.text(sample)
    if fmt.lettered:
        answers = [f"{LETTERS[i]}. {c}" for i, c in enumerate(sample.choices)]
    else:
        answers = [c[:1].upper() + c[1:] for c in sample.choices]
    return prompt, answers


@READERS.register("benchmark_qa")
def benchmark_qa(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """A harness MCQA task's train split as QA pairs: the task's prompt -> the right answer."""
    fmt, samples = _task_samples(spec, ctx)
    for s in samples:
        prompt, answers = _mcqa_parts(fmt, s)
        assert isinstance(s.target, int)
        yield ChatRecord(f"{spec.task}:{s.id}", spec.reader,
                         (Message("user", prompt), Message("assistant", answers[s.target])))


@READERS.register("benchmark_preference")
def benchmark_preference(spec: DataSourceSpec, ctx: ReadContext) -> Iterator[TrainRecord]:
    """A harness MCQA task's train split as preference pairs: the right answer is chosen, one
    wrong option (picked by a hash of the sample id, so reruns agree) is rejected."""
    fmt, samples = _task_samples(spec, ctx)
    for s in samples:
        prompt, answers = _mcqa_parts(fmt, s)
        assert isinstance(s.target, int)
        wrong = [a for i, a in enumerate(answers) if i != s.target]
        pick = int(hashlib.sha256(s.id.encode()).hexdigest()[:8], 16) % len(wrong)
        yield PreferenceRecord(f"{spec.task}:{s.id}", spec.reader, (Message("user", prompt),),
                               answers[s.target], wrong[pick])


def read_source(spec: DataSourceSpec, ctx: ReadContext) -> list[TrainRecord]:
    records: list[TrainRecord] = []
    for rec in READERS.get(spec.reader)(spec, ctx):
        records.append(rec)
        if spec.limit is not None and len(records) >= spec.limit:
            break
    return records
