"""Interactive consultation (MediQ-style; Li et al., NeurIPS 2024): the model under test, the
doctor, sees only the patient's initial presentation, the question and the options. Each turn it
either asks the patient one question (`QUESTION: ...`) or commits to an answer (`ANSWER: X`),
within a budget of `max_turns` turns; a simulated patient (harness.protocols.patients) answers from the
case's atomic facts only. A doctor that spends its budget without answering is asked once more
and must answer then (MediQ's forced answer).

One `harness run` gives every number: per sample the protocol also asks the same model to answer
with the full case (upper bound) and with the initial presentation only (lower bound), in the
first stage, beside the first doctor turn. Later turns are `followup` stages; the conversation is
replayed from the stored results (`replay`), so it resumes and caches like any other protocol,
and the whole conversation is stored per sample.

Parsing a doctor turn (`parse_doctor_turn`): the first line that starts with `QUESTION:` or
`ANSWER:` (any case, markdown emphasis allowed) decides; an `ANSWER:` line must name one option
(harness.protocols.extract's `choice` extractor). Without such a line (fallback): a text with a question
mark is a question (its first sentence ending in "?"); else an answer the `choice` extractor is
sure of; else the turn is invalid: it uses a turn of the budget, the doctor is reminded of the
format, and invalid turns are counted. The forced turn is read as an answer only; when it names
no option, the doctor is asked once more in a fresh prompt shaped like the bounds' (the initial
presentation plus the facts revealed so far), as MediQ's expert answers from what it gathered;
only when that names none either is the sample unscored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.data.adapters import ADAPTERS, LETTERS, _letter_index
from harness.protocols.base import PROTOCOLS, PromptContext, Protocol
from harness.protocols.extract import get_extractor
from harness.scoring.metrics import METRICS, Metric, RatioMetric, value_reader
from harness.types import (
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    Message,
    Request,
    RequestKind,
    Sample,
    Score,
)

DOCTOR_SYSTEM = (
    "You are a doctor. You see a patient and must answer a multiple-choice question about the case, "
    "but you know only the patient's initial presentation. In each turn do exactly one of two things: "
    "ask the patient one question, written as 'QUESTION: <your question>', or give your final answer, "
    "written as 'ANSWER: <letter>'. Ask when you need more information; answer when you are confident."
)
INVALID_NOTE = "Please reply with exactly one of: 'QUESTION: <one question>' or 'ANSWER: <letter>'."
FORCED_NOTE = "You have no questions left. Give your final answer now, written as 'ANSWER: <letter>'."
BOUND_INSTRUCTION = "Reply with your final answer, written as 'ANSWER: <letter>'."

_MARKER = re.compile(r"^[\s*_#>]*(QUESTION|ANSWER)[*_]*\s*[:：][*_]*\s*(.*)$", re.IGNORECASE)
_SENTENCE_Q = re.compile(r"[^.!?\n]*\?")


@dataclass(frozen=True)
class DoctorTurn:
    action: Literal["question", "answer", "invalid"]
    method: str  # strict | fallback | the reason a turn is invalid
    question: str | None = None
    answer: int | None = None


def _answer(text: str, sample: Sample, ctx: PromptContext) -> int | None:
    labels = ctx.format.labels(sample)
    return get_extractor("choice")(text, labels, sample.choices).index


def parse_doctor_turn(text: str, sample: Sample, ctx: PromptContext, *, forced: bool = False) -> DoctorTurn:
    for line in text.splitlines():
        m = _MARKER.match(line)
        if m is None:
            continue
        kind, rest = m.group(1).upper(), m.group(2).strip()
        if kind == "ANSWER":
            index = _answer(f"The answer is {rest}", sample, ctx) if rest else None
            if index is None:
                return DoctorTurn("invalid", "ANSWER line names no single option")
            return DoctorTurn("answer", "strict", answer=index)
        if forced:
            break
        if not rest:
            return DoctorTurn("invalid", "empty QUESTION line")
        return DoctorTurn("question", "strict", question=rest)
    if not forced and (q := _SENTENCE_Q.search(text)):
        return DoctorTurn("question", "fallback", question=q.group(0).strip())
    index = _answer(text, sample, ctx)
    if index is not None:
        return DoctorTurn("answer", "fallback", answer=index)
    return DoctorTurn("invalid", "neither a question nor an answer")


def _text(result: Any) -> str:
    assert isinstance(result, GenerationResult)
    return result.text


def _case(sample: Sample) -> tuple[str, list[str], list[str]]:
    meta = sample.metadata
    return str(meta["question"]), list(meta["context"]), list(meta["facts"])


def _options(sample: Sample) -> str:
    return "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(sample.choices))


@dataclass
class Consultation:
    """A conversation replayed from the results so far; `next` is the request it waits on."""

    messages: list[Message]
    transcript: list[dict[str, Any]] = field(default_factory=list)
    revealed: list[int] = field(default_factory=list)
    n_turns: int = 0  # budgeted doctor turns used (questions and invalid turns)
    questions: int = 0
    relevant: int = 0  # questions that revealed at least one fact
    invalid: int = 0
    final: DoctorTurn | None = None
    forced: bool = False
    from_summary: bool = False  # the final answer came from the summary prompt
    next: Request | None = None


class InteractiveProtocol(Protocol):
    name = "interactive"
    kind = RequestKind.GENERATE
    metrics = ("accuracy", "accuracy_full_case", "accuracy_initial_only", "questions_per_case",
               "facts_elicited", "question_relevance", "premature_answer_rate", "forced_answer_rate",
               "invalid_turn_rate")

    def _llm_patient(self, ctx: PromptContext) -> bool:
        return "patient" in ctx.aux_roles

    def _retrieval(self, ctx: PromptContext) -> Any:
        from harness.protocols.patients import RetrievalPatient

        return RetrievalPatient(ctx.options.patient_threshold, ctx.options.patient_top_k)

    def aux_roles(self, ctx: PromptContext) -> tuple[str, ...]:
        return ("patient",) if self._llm_patient(ctx) else ()

    def record_info(self, ctx: PromptContext) -> dict[str, Any]:
        from harness.protocols.patients import llm_patient_info

        patient = llm_patient_info() if self._llm_patient(ctx) else self._retrieval(ctx).info()
        return {"patient": patient, "max_turns": ctx.options.max_turns}

    def _config(self, ctx: PromptContext) -> GenerationConfig:
        return GenerationConfig(max_tokens=ctx.options.max_tokens, temperature=0.0)

    def _system(self, ctx: PromptContext) -> Message:
        return Message("system", ctx.options.system or DOCTOR_SYSTEM)

    def _bound(self, sample: Sample, ctx: PromptContext, case: str) -> GenerationRequest:
        question, _, _ = _case(sample)
        content = f"Case: {case}\n\nQuestion: {question}\n{_options(sample)}\n{BOUND_INSTRUCTION}"
        return GenerationRequest(messages=(self._system(ctx), Message("user", content)), config=self._config(ctx))

    def _opening(self, sample: Sample, ctx: PromptContext) -> list[Message]:
        question, _, _ = _case(sample)
        content = (f"Initial presentation: {sample.input}\n\nQuestion: {question}\n{_options(sample)}\n"
                   f"You may ask up to {ctx.options.max_turns} questions. Reply with 'QUESTION: ...' or 'ANSWER: X'.")
        return [self._system(ctx), Message("user", content)]

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        if ctx.n_shot:
            raise ValueError("the interactive protocol takes no few-shot exemplars")
        _, context, facts = _case(sample)
        if not facts:
            raise ValueError("the case has no facts for the patient")
        return [
            self._bound(sample, ctx, " ".join(context)),
            self._bound(sample, ctx, str(sample.input)),
            GenerationRequest(messages=tuple(self._opening(sample, ctx)), config=self._config(ctx)),
        ]

    def replay(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Consultation:
        """Rebuild the conversation from results[2:] (doctor turns, and LLM-patient replies)."""
        from harness.protocols.patients import llm_patient_request, parse_llm_reply

        _, _, facts = _case(sample)
        budget = ctx.options.max_turns
        conv = Consultation(messages=self._opening(sample, ctx))
        pos = 2
        while True:
            if pos >= len(results):
                conv.next = GenerationRequest(messages=tuple(conv.messages), config=self._config(ctx))
                return conv
            text = _text(results[pos])
            pos += 1
            forced = conv.n_turns == budget
            turn = parse_doctor_turn(text, sample, ctx, forced=forced)
            conv.messages.append(Message("assistant", text))
            conv.transcript.append({"role": "doctor", "text": text, "action": turn.action, "parse": turn.method,
                                    "forced": forced})
            if forced or turn.action == "answer":
                conv.final, conv.forced = turn, forced
                if not forced or turn.answer is not None:
                    return conv
                # MediQ's expert answers from what it gathered: a fresh single-turn prompt in the
                # bounds' shape (initial presentation plus the revealed facts). With nothing
                # revealed it is the lower-bound request itself.
                if pos >= len(results):
                    conv.next = self._bound(sample, ctx, self._gathered(sample, conv))
                    return conv
                text = _text(results[pos])
                conv.final = parse_doctor_turn(text, sample, ctx, forced=True)
                conv.from_summary = True
                conv.transcript.append({"role": "doctor", "text": text, "action": conv.final.action,
                                        "parse": conv.final.method, "forced": True, "from_summary": True})
                return conv
            conv.n_turns += 1
            if turn.question is not None:
                if self._llm_patient(ctx):
                    if pos >= len(results):
                        conv.next = llm_patient_request(turn.question, facts)
                        return conv
                    reply = parse_llm_reply(_text(results[pos]), len(facts))
                    pos += 1
                else:
                    reply = self._retrieval(ctx).reply(turn.question, facts, conv.revealed)
                conv.questions += 1
                conv.relevant += bool(reply.facts)
                conv.revealed += [i for i in reply.facts if i not in conv.revealed]
                entry: dict[str, Any] = {"role": "patient", "text": reply.text, "facts": list(reply.facts)}
                if reply.similarities:
                    entry["best_similarity"] = max(reply.similarities)
                if not reply.parsed:
                    entry["unparsed"] = True
                conv.transcript.append(entry)
                note = f"Patient: {reply.text}"
            else:
                conv.invalid += 1
                conv.transcript.append({"role": "harness", "text": INVALID_NOTE})
                note = INVALID_NOTE
            left = budget - conv.n_turns
            if left == 0:
                conv.transcript.append({"role": "harness", "text": FORCED_NOTE})
                note += f"\n\n{FORCED_NOTE}"
            else:
                note += f"\n\n({left} question{'s' if left > 1 else ''} left.)"
            conv.messages.append(Message("user", note))

    def _gathered(self, sample: Sample, conv: Consultation) -> str:
        from harness.protocols.patients import fact_text

        _, _, facts = _case(sample)
        return " ".join([str(sample.input), *(fact_text(facts[i]) for i in sorted(conv.revealed))])

    def followup(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> list[Request]:
        nxt = self.replay(sample, results, ctx).next
        return [nxt] if nxt is not None else []

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        conv = self.replay(sample, results, ctx)
        if conv.next is not None or conv.final is None:
            raise ValueError(f"sample {sample.id}: the consultation did not finish")
        _, _, facts = _case(sample)
        labels = ctx.format.labels(sample)

        def correct(index: int | None) -> float | None:
            return None if index is None else float(index == sample.target)

        bounds = [parse_doctor_turn(_text(r), sample, ctx, forced=True) for r in results[:2]]
        values = {
            "accuracy_full_case": correct(bounds[0].answer),
            "accuracy_initial_only": correct(bounds[1].answer),
            "questions": conv.questions,
            "relevant_questions": conv.relevant,
            "facts_elicited": len(conv.revealed) / len(facts),
            "premature_answer": float(not conv.forced and conv.questions == 0),
            "forced_answer": float(conv.forced),
            "answered_from_summary": float(conv.from_summary),
            "invalid_turns": conv.invalid,
            "doctor_turns": len([t for t in conv.transcript if t["role"] == "doctor" and not t.get("from_summary")]),
        }
        meta: dict[str, Any] = {
            "values": values, "conversation": conv.transcript, "revealed_facts": conv.revealed,
            "n_facts": len(facts), "output": _text(results[-1]),
            "bounds": {"full_case": {"output": _text(results[0]), "answer": _label(bounds[0], labels)},
                       "initial_only": {"output": _text(results[1]), "answer": _label(bounds[1], labels)}},
        }
        answer = conv.final.answer
        if answer is None:
            return Score(None, explanation=f"no final answer: {conv.final.method}", metadata=meta)
        return Score(float(answer == sample.target), answer=labels[answer], metadata=meta)


def _label(turn: DoctorTurn, labels: tuple[str, ...]) -> str | None:
    return None if turn.answer is None else labels[turn.answer]


@ADAPTERS.register("mediq_consult")
def mediq_consult(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample | None:
    """MediQ record (MedQA dev or Craft-MD): the initial presentation is context[0]; the case's
    atomic facts are what the patient may reveal. Records without a patient (no context or no
    facts: 3 knowledge questions of the MedQA dev split) are skipped."""
    context, facts = rec["context"], rec["facts"]
    if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
        raise ValueError("field 'context' must be a list of sentences")
    if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
        raise ValueError("field 'facts' must be a list of strings")
    if not context or not facts:
        return None
    letters = sorted(rec["options"])
    choices = tuple(rec["options"][k] for k in letters)
    answer = _letter_index(str(rec["answer_idx"]), len(choices))
    return Sample(
        id=f"{opts.get('id_prefix', 'mediq')}-{rec.get('id', i)}", input=context[0], choices=choices, target=answer,
        metadata={"question": str(rec["question"]), "context": context, "facts": facts},
    )


INTERACTIVE = InteractiveProtocol()

# Per-sample values are read even when the final answer is unscored: the conversation happened.
ACCURACY_FULL_CASE = Metric("accuracy_full_case", True, value_reader("accuracy_full_case"),
                            "upper bound: the same model answering with the full case")
ACCURACY_INITIAL_ONLY = Metric("accuracy_initial_only", True, value_reader("accuracy_initial_only"),
                               "lower bound: the same model answering with the initial presentation only")
QUESTIONS_PER_CASE = Metric("questions_per_case", False, value_reader("questions"),
                            "questions the doctor asked per case (mean)")
FACTS_ELICITED = Metric("facts_elicited", True, value_reader("facts_elicited"),
                        "share of the case's facts the patient revealed (mean over cases)")
QUESTION_RELEVANCE = RatioMetric("question_relevance", True, "relevant_questions", "questions",
                                 "share of all questions that made the patient reveal at least one fact")
PREMATURE_ANSWER_RATE = Metric("premature_answer_rate", False, value_reader("premature_answer"),
                               "share of cases answered without asking a single question")
FORCED_ANSWER_RATE = Metric("forced_answer_rate", False, value_reader("forced_answer"),
                            "share of cases that used the whole budget without answering and were forced to")
INVALID_TURN_RATE = RatioMetric("invalid_turn_rate", False, "invalid_turns", "doctor_turns",
                                "share of all doctor turns that were neither a question nor an answer")

# Registered where they are defined (the registries import family modules on first lookup).
PROTOCOLS.add("interactive", INTERACTIVE)
METRICS.add("accuracy_full_case", ACCURACY_FULL_CASE)
METRICS.add("accuracy_initial_only", ACCURACY_INITIAL_ONLY)
METRICS.add("questions_per_case", QUESTIONS_PER_CASE)
METRICS.add("facts_elicited", FACTS_ELICITED)
METRICS.add("question_relevance", QUESTION_RELEVANCE)
METRICS.add("premature_answer_rate", PREMATURE_ANSWER_RATE)
METRICS.add("forced_answer_rate", FORCED_ANSWER_RATE)
METRICS.add("invalid_turn_rate", INVALID_TURN_RATE)
