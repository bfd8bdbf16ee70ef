"""Record adapters: one raw dataset record -> one Sample. Task YAMLs name them.

Each adapter gets (record, index, options) and raises KeyError/ValueError on a malformed
record; the loader turns that into an error naming the file and record number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from harness.registry import Registry
from harness.types import Sample

Adapter = Callable[[Mapping[str, Any], int, Mapping[str, Any]], Sample | None]
ADAPTERS: Registry[Adapter] = Registry("record adapter", families=True)

LETTERS = "ABCDEFGHIJ"


def _letter_index(letter: str, n: int) -> int:
    idx = LETTERS.index(letter.strip().upper())
    if idx >= n:
        raise ValueError(f"answer letter {letter!r} is beyond {n} options")
    return idx


@ADAPTERS.register("medqa_options")
def medqa_options(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """MedQA original JSONL: question, options {A..D}, answer_idx."""
    letters = sorted(rec["options"])
    choices = tuple(rec["options"][k] for k in letters)
    return Sample(
        id=f"{opts.get('id_prefix', 'medqa')}-{i:05d}",
        input=rec["question"],
        choices=choices,
        target=_letter_index(rec["answer_idx"], len(choices)),
        metadata={"meta_info": rec.get("meta_info")} if rec.get("meta_info") else {},
    )


@ADAPTERS.register("mediq_case")
def mediq_case(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """MediQ record (MedQA dev): the full question is context sentences + question."""
    letters = sorted(rec["options"])
    choices = tuple(rec["options"][k] for k in letters)
    question = " ".join([*rec["context"], rec["question"]])
    return Sample(
        id=f"{opts.get('id_prefix', 'mediq')}-{rec.get('id', i)}",
        input=question,
        choices=choices,
        target=_letter_index(rec["answer_idx"], len(choices)),
    )


@ADAPTERS.register("medqa_hf")
def medqa_hf(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """GBaker/MedQA-USMLE-4-options-hf: sent1, ending0..3, label."""
    choices = tuple(rec[f"ending{k}"] for k in range(4))
    return Sample(id=f"medqa-{i:05d}", input=rec["sent1"], choices=choices, target=int(rec["label"]))


@ADAPTERS.register("medmcqa_prefixed")
def medmcqa_prefixed(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """Reduced MedMCQA schema: choices "A. text", answer 0-based."""
    choices = []
    for k, raw in enumerate(rec["choices"]):
        prefix = f"{LETTERS[k]}. "
        if not raw.startswith(prefix):
            raise ValueError(f"choice {k} does not start with {prefix!r}: {raw[:40]!r}")
        choices.append(raw[len(prefix):])
    answer = int(rec["answer"])
    if not 0 <= answer < len(choices):
        raise ValueError(f"answer {answer} out of range")
    return Sample(id=f"medmcqa-{i:05d}", input=rec["question"], choices=tuple(choices), target=answer)


@ADAPTERS.register("medmcqa_hf")
def medmcqa_hf(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """openlifescienceai/medmcqa: question, opa..opd, cop (0-based)."""
    choices = tuple(rec[k] for k in ("opa", "opb", "opc", "opd"))
    meta = {"subject": rec["subject_name"]} if rec.get("subject_name") else {}
    return Sample(
        id=f"medmcqa-{i:05d}", input=rec["question"], choices=choices, target=int(rec["cop"]),
        metadata=meta,
    )


PUBMEDQA_CHOICES = ("yes", "no", "maybe")


def _pubmedqa(pmid: object, question: str, contexts: list[str], decision: str) -> Sample:
    return Sample(
        id=f"pubmedqa-{pmid}",
        input=question,
        choices=PUBMEDQA_CHOICES,
        target=PUBMEDQA_CHOICES.index(decision),
        metadata={"contexts": list(contexts), "pmid": str(pmid)},
    )


@ADAPTERS.register("pubmedqa_pqal")
def pubmedqa_pqal(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """ori_pqal.json entry (keyed by PMID; the reader puts the key in `_key`)."""
    return _pubmedqa(rec["_key"], rec["QUESTION"], rec["CONTEXTS"], rec["final_decision"])


@ADAPTERS.register("pubmedqa_hf")
def pubmedqa_hf(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """qiaojin/PubMedQA pqa_labeled: pubid, question, context.contexts, final_decision."""
    return _pubmedqa(rec["pubid"], rec["question"], rec["context"]["contexts"], rec["final_decision"])


@ADAPTERS.register("mmlu_csv_row")
def mmlu_csv_row(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """Original MMLU CSV row (no header): question, A, B, C, D, answer letter."""
    row = rec["_row"]
    if len(row) != 6:
        raise ValueError(f"expected 6 columns, got {len(row)}")
    subject = opts["subject"]
    return Sample(
        id=f"mmlu-{subject}-{i:04d}",
        input=row[0],
        choices=tuple(row[1:5]),
        target=_letter_index(row[5], 4),
        metadata={"subject": subject},
    )


@ADAPTERS.register("mmlu_options")
def mmlu_options(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample | None:
    """Canonical MMLU JSONL (medagents copy): question, options {A..D}, answer_idx, subject.
    Records of other subjects are skipped when `subject` is set."""
    subject = opts.get("subject")
    if subject and rec["subject"] != subject:
        return None
    letters = sorted(rec["options"])
    return Sample(
        id=f"mmlu-{rec['subject']}-{rec.get('realidx', i)}",
        input=rec["question"],
        choices=tuple(rec["options"][k] for k in letters),
        target=_letter_index(rec["answer_idx"], len(letters)),
        metadata={"subject": rec["subject"]},
    )


@ADAPTERS.register("mmlu_hf")
def mmlu_hf(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """cais/mmlu: question, subject, choices [4], answer (0-based)."""
    subject = rec.get("subject") or opts["subject"]
    return Sample(
        id=f"mmlu-{subject}-{i:04d}",
        input=rec["question"],
        choices=tuple(rec["choices"]),
        target=int(rec["answer"]),
        metadata={"subject": subject},
    )


_SELFBIORAG_MCQA = re.compile(
    r"QUESTION: (.*)\nOption A:(.*)\nOption B:(.*)\nOption C:(.*)\nOption D:(.*?)\n?$", re.S
)


@ADAPTERS.register("medmcqa_selfbiorag")
def medmcqa_selfbiorag(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """Self-BioRAG's MedMCQA train records: "QUESTION: ...\\nOption A:..." and "Answer: (X)"."""
    match = _SELFBIORAG_MCQA.match(rec["instances"]["input"])
    if match is None:
        raise ValueError("input does not match 'QUESTION: ... Option A: ... Option D: ...'")
    answer = rec["instances"]["output"].strip()
    if not (answer.startswith("Answer: (") and answer.endswith(")")):
        raise ValueError(f"unexpected output {answer!r}")
    choices = tuple(g.strip() for g in match.groups()[1:])
    return Sample(
        id=f"medmcqa-train-{i:05d}", input=match.group(1).strip(), choices=choices,
        target=_letter_index(answer[len("Answer: ("):-1], 4),
    )


_SELFBIORAG_OPTION = re.compile(r"^Option ([A-J]):\s?(.*)$")


@ADAPTERS.register("medqa_selfbiorag")
def medqa_selfbiorag(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample | None:
    """Self-BioRAG's MedQA train records: "Question: ...\\nOption A: ..." lines and the answer
    TEXT. Records with another number of options than `n_options` (default 4; the subset mixes
    in 5-option questions) are skipped: they belong to another variant of the task."""
    lines = rec["instances"]["input"].split("\n")
    if not lines[0].startswith("Question: "):
        raise ValueError("input does not start with 'Question: '")
    question: list[str] = []
    choices: list[str] = []
    for line in lines:
        match = _SELFBIORAG_OPTION.match(line)
        if match:
            choices.append(match.group(2).strip())
        elif choices:
            choices[-1] = f"{choices[-1]}\n{line}".strip()
        else:
            question.append(line)
    if len(choices) != int(opts.get("n_options", 4)):
        return None
    answer = rec["instances"]["output"].strip().strip('"').strip()
    hits = [k for k, c in enumerate(choices) if c == answer]
    if len(hits) != 1:
        raise ValueError(f"answer {answer!r} is not exactly one of the options")
    return Sample(
        id=f"{opts.get('id_prefix', 'medqa-train')}-{i:05d}",
        input="\n".join(question).removeprefix("Question: ").strip(), choices=tuple(choices), target=hits[0],
    )


