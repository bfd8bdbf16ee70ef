"""Simulated patients for the interactive consultation (harness.protocols.interactive). A patient knows only
the case's atomic facts and answers one doctor question at a time.

- `RetrievalPatient` (default; deterministic, offline): the question and each fact are embedded
  with all-MiniLM-L6-v2 (mean pooling, L2-normalised, as its model card prescribes); the facts
  whose cosine similarity to the question is at least `threshold` are revealed, facts not yet
  revealed first, then by similarity, at most `top_k`; none above the threshold: "I don't know."
  A fact below the threshold is never revealed. A question is encoded alone and a case's facts
  always as the same batch, so an embedding never depends on what else runs, and similarities
  are rounded to 4 decimals before the comparison, so a run repeats exactly.
- The LLM patient (`llm_patient_request`, `parse_llm_reply`): any backend, sent through the
  runner as a RoutedRequest to the run's "patient" model. It is told the numbered facts and asked
  to name the facts it used on a first line `FACTS: 2, 5` (or `FACTS: none`); the doctor sees
  only the rest of the reply. Facts it names that are out of range are dropped; a reply without
  that line reveals no fact (counted as unparsed).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from harness.scoring.textmetrics import ENCODER_NAME, ENCODER_PACKAGE, encoder_dir
from harness.types import GenerationConfig, GenerationRequest, Message, RoutedRequest

DONT_KNOW = "I don't know."
POOLING = "mean over tokens, L2-normalised (sentence-transformers' config for this model)"
_NUMBERING = re.compile(r"^\s*\d+\s*[.)]\s*")


def fact_text(fact: str) -> str:
    """A fact without its "3. " numbering (MediQ numbers its facts)."""
    return _NUMBERING.sub("", fact).strip()


def encoder_info() -> dict[str, Any]:
    return {"model": ENCODER_NAME, "package": f"{ENCODER_PACKAGE}=={importlib.metadata.version(ENCODER_PACKAGE)}",
            "pooling": POOLING}


@functools.lru_cache(maxsize=1)
def _encoder() -> tuple[Any, Any]:
    # sentence-transformers is not a dependency (installing it upgrades transformers); its
    # pipeline for this model is a BERT forward pass plus mean pooling and normalisation.
    from transformers import AutoModel, AutoTokenizer

    folder = str(encoder_dir())
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def _encode(texts: Sequence[str]) -> Any:
    import torch

    tokenizer, model = _encoder()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


@functools.lru_cache(maxsize=4096)
def embed(text: str) -> tuple[float, ...]:
    """The unit-length sentence embedding of a question, encoded alone."""
    return tuple(_encode([text])[0].tolist())


@functools.lru_cache(maxsize=4096)
def embed_facts(facts: tuple[str, ...]) -> tuple[tuple[float, ...], ...]:
    """The embeddings of one case's facts, encoded together as one batch: always the same batch
    for the same case, so the same numbers."""
    return tuple(tuple(row.tolist()) for row in _encode([fact_text(f) for f in facts]))


def similarities(question: str, facts: Sequence[str]) -> list[float]:
    """Cosine similarity of the question to each fact, rounded to 4 decimals."""
    import numpy as np

    sims = np.asarray(embed_facts(tuple(facts))) @ np.asarray(embed(question))
    return [round(float(x), 4) for x in sims]


@dataclass(frozen=True)
class PatientReply:
    text: str
    facts: tuple[int, ...]  # 0-based indices of the facts this reply reveals
    similarities: tuple[float, ...] = ()  # retrieval: of every fact, in fact order
    parsed: bool = True


@dataclass(frozen=True)
class RetrievalPatient:
    threshold: float
    top_k: int

    def info(self) -> dict[str, Any]:
        return {"kind": "retrieval", "encoder": encoder_info(), "threshold": self.threshold, "top_k": self.top_k}

    def reply(self, question: str, facts: Sequence[str], revealed: Collection[int] = ()) -> PatientReply:
        sims = similarities(question, facts)
        above = [i for i, s in enumerate(sims) if s >= self.threshold]
        chosen = sorted(above, key=lambda i: (i in revealed, -sims[i], i))[: self.top_k]
        if not chosen:
            return PatientReply(DONT_KNOW, (), tuple(sims))
        return PatientReply(" ".join(fact_text(facts[i]) for i in chosen), tuple(chosen), tuple(sims))


LLM_PATIENT_SYSTEM = (
    "You play a patient answering a doctor's question. You know only the numbered facts below. "
    "Answer the question truthfully using only those facts, and only the facts the question asks "
    "about. If no fact answers it, reply \"I don't know.\" Start your reply with a line "
    "'FACTS: ' followed by the numbers of the facts you used, separated by commas, or 'none'; "
    "then answer in one or two sentences."
)
LLM_PATIENT_MAX_TOKENS = 96
_FACTS_LINE = re.compile(r"^\s*[*_]*FACTS[*_]*\s*[:：]\s*(.*)$", re.IGNORECASE)


def llm_patient_info() -> dict[str, Any]:
    from harness.types import stable_hash

    return {"kind": "llm", "prompt_hash": stable_hash(LLM_PATIENT_SYSTEM)[:16],
            "max_tokens": LLM_PATIENT_MAX_TOKENS, "temperature": 0.0}


def llm_patient_request(question: str, facts: Sequence[str]) -> RoutedRequest:
    numbered = "\n".join(f"{i}. {fact_text(f)}" for i, f in enumerate(facts, 1))
    user = f"Facts:\n{numbered}\n\nThe doctor asks: {question}"
    config = GenerationConfig(max_tokens=LLM_PATIENT_MAX_TOKENS, temperature=0.0)
    messages = (Message("system", LLM_PATIENT_SYSTEM), Message("user", user))
    return RoutedRequest("patient", GenerationRequest(messages=messages, config=config))


def parse_llm_reply(text: str, n_facts: int) -> PatientReply:
    lines = text.strip().splitlines()
    if not lines or not (m := _FACTS_LINE.match(lines[0])):
        return PatientReply(text.strip() or DONT_KNOW, (), parsed=False)
    numbers = [int(n) for n in re.findall(r"\d+", m.group(1))]
    facts = tuple(dict.fromkeys(n - 1 for n in numbers if 1 <= n <= n_facts))
    answer = "\n".join(lines[1:]).strip() or DONT_KNOW
    return PatientReply(answer, facts)
