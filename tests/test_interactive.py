"""The interactive consultation (MediQ-style): the retrieval patient, the doctor-turn parser, and
every metric on scripted doctors with known values (the real model runs it in test_proactive_e2e)."""

import json
from pathlib import Path

import pytest

from harness.data.sources import load_bundled
from harness.data.spec import ProtocolSpec
from harness.errors import HarnessError
from harness.protocols.base import PromptContext
from harness.protocols.formats import FORMATS
from harness.protocols.interactive import FORCED_NOTE, INTERACTIVE, parse_doctor_turn
from harness.protocols.patients import DONT_KNOW, RetrievalPatient, embed, embed_facts, fact_text, similarities
from harness.run.config import AuxModel, RunConfig
from harness.run.runner import Runner
from harness.types import GenerationRequest
from tests.conftest import ROOT, ScriptedBackend

KEY = "mediq|interactive|0shot"
CASES = load_bundled("mediq_test.jsonl")[:3]
PATIENT = RetrievalPatient(threshold=0.35, top_k=2)


def case_with(sample_id: str):
    return next(s for s in load_bundled("mediq_test.jsonl") if s.id == sample_id)


def test_retrieval_patient_reveals_only_facts_matching_the_question():
    sample = CASES[0]
    facts = sample.metadata["facts"]
    for question in ("What is the capital of France?", "Can you recommend a good novel?"):
        reply = PATIENT.reply(question, facts)
        assert reply.text == DONT_KNOW and reply.facts == ()
    for fact in facts[:4]:  # asking a fact word for word reveals it, and only facts above the threshold
        reply = PATIENT.reply(fact_text(fact), facts)
        assert reply.facts[0] == facts.index(fact)
        assert all(reply.similarities[i] >= PATIENT.threshold for i in reply.facts)
        assert len(reply.facts) <= PATIENT.top_k
        below = [i for i, s in enumerate(reply.similarities) if s < PATIENT.threshold]
        assert not any(fact_text(facts[i]) in reply.text for i in below)


def test_retrieval_patient_prefers_facts_not_yet_revealed():
    sample = CASES[0]
    facts = sample.metadata["facts"]
    question = fact_text(facts[0])
    first = PATIENT.reply(question, facts)
    second = PATIENT.reply(question, facts, revealed=first.facts[:1])
    above = [i for i, s in enumerate(first.similarities) if s >= PATIENT.threshold]
    if len(above) > 1:  # another matching fact comes first once the best one is known
        assert second.facts[0] != first.facts[0]
    assert set(second.facts) <= set(above)


def test_retrieval_patient_is_deterministic():
    facts = CASES[1].metadata["facts"]
    question = "Have you had any fever or weight loss recently?"
    before = similarities(question, facts)
    embed.cache_clear()  # recompute every embedding from scratch
    embed_facts.cache_clear()
    assert similarities(question, facts) == before
    assert PATIENT.reply(question, facts) == PATIENT.reply(question, facts)


def ctx(**options):
    return PromptContext(FORMATS.get("medqa"), ProtocolSpec(**options))


@pytest.mark.parametrize(("text", "action", "method", "payload"), [
    ("QUESTION: Do you smoke?", "question", "strict", "Do you smoke?"),
    ("**Question:** any fever", "question", "strict", "any fever"),
    ("ANSWER: (C)", "answer", "strict", 2),
    ("I think so.\nanswer: D", "answer", "strict", 3),
    ("How long have you had the cough? It matters.", "question", "fallback", "How long have you had the cough?"),
    ("The answer is B.", "answer", "fallback", 1),
    ("ANSWER: maybe later", "invalid", "ANSWER line names no single option", None),
    ("QUESTION:", "invalid", "empty QUESTION line", None),
    ("Let me think about this case.", "invalid", "neither a question nor an answer", None),
])
def test_doctor_turn_parsing(text, action, method, payload):
    turn = parse_doctor_turn(text, CASES[0], ctx())
    assert (turn.action, turn.method) == (action, method)
    assert (turn.question if action == "question" else turn.answer) == payload


def test_a_forced_turn_is_read_as_an_answer_only():
    assert parse_doctor_turn("QUESTION: fever?\nThe answer is A", CASES[0], ctx(), forced=True).answer == 0
    assert parse_doctor_turn("Do you smoke?", CASES[0], ctx(), forced=True).action == "invalid"


def small_tasks(tmp_path: Path, max_turns: int) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    text = (ROOT / "tasks/interactive.yaml").read_text().replace("max_turns: 5", f"max_turns: {max_turns}")
    (folder / "interactive.yaml").write_text(text.replace("task: mediq", "task: t_mediq"))
    return folder


def run(tmp_path, reply, max_turns=5, limit=3, aux=None, **kw):
    config = RunConfig(tasks=("t_mediq",), data_source="bundled", output=tmp_path / "run", cache=None, limit=limit,
                       task_dirs=(small_tasks(tmp_path, max_turns),), **kw)
    backend = ScriptedBackend(reply)
    record = Runner(config, backend=backend, aux_backends=aux).run()
    entries = [json.loads(x) for x in (tmp_path / "run/samples.jsonl").read_text().splitlines()]
    return record.tasks["t_mediq|interactive|0shot"], entries, backend


def is_bound(req: GenerationRequest) -> bool:
    return req.messages is not None and req.messages[1].content.startswith("Case: ")


def value(res, name):
    return res.metrics[name]["value"]


def targets(n=3):
    return [s.target for s in load_bundled("mediq_test.jsonl")[:n]]


def test_a_doctor_that_never_asks(tmp_path):
    res, entries, backend = run(tmp_path, lambda req: "ANSWER: A")
    expected = sum(t == 0 for t in targets()) / 3
    assert value(res, "accuracy") == value(res, "accuracy_full_case") == value(res, "accuracy_initial_only") == expected
    assert value(res, "questions_per_case") == 0 and value(res, "facts_elicited") == 0
    assert value(res, "premature_answer_rate") == 1 and value(res, "forced_answer_rate") == 0
    assert value(res, "invalid_turn_rate") == 0
    assert value(res, "question_relevance") is None and res.metrics["question_relevance"]["n_scored"] == 0
    assert len(backend.generate_calls) == 3 * 3  # two bounds and one doctor turn per case
    bounds = [r.messages[1].content for r in backend.generate_calls if is_bound(r)]
    for sample in load_bundled("mediq_test.jsonl")[:3]:
        context = sample.metadata["context"]
        assert any(b.startswith(f"Case: {' '.join(context)}\n\nQuestion: ") for b in bounds)  # upper bound
        assert any(b.startswith(f"Case: {context[0]}\n\nQuestion: ") for b in bounds)  # lower bound
    for e in entries:
        assert [t["role"] for t in e["score"]["metadata"]["conversation"]] == ["doctor"]


def ask_every_fact(req: GenerationRequest) -> str:
    """Asks the case's facts one by one, word for word, then answers B."""
    assert req.messages is not None
    if is_bound(req):
        return "ANSWER: B"
    opening = req.messages[1].content
    sample = next(s for s in load_bundled("mediq_test.jsonl") if s.input in opening)
    asked = sum(m.role == "assistant" for m in req.messages)
    facts = sample.metadata["facts"]
    return f"QUESTION: {fact_text(facts[asked])}" if asked < len(facts) else "ANSWER: B"


def test_a_doctor_that_asks_every_fact(tmp_path):
    n_facts = len(load_bundled("mediq_test.jsonl")[0].metadata["facts"])
    res, entries, _ = run(tmp_path, ask_every_fact, max_turns=n_facts + 1, limit=1)
    assert value(res, "questions_per_case") == n_facts
    assert value(res, "facts_elicited") == 1.0 and value(res, "question_relevance") == 1.0
    assert res.metrics["question_relevance"]["details"] == {"numerator": n_facts, "denominator": n_facts}
    assert value(res, "premature_answer_rate") == 0 and value(res, "forced_answer_rate") == 0
    assert value(res, "accuracy") == float(targets(1)[0] == 1)
    for e in entries:
        meta = e["score"]["metadata"]
        patient = [t for t in meta["conversation"] if t["role"] == "patient"]
        assert len(patient) == meta["n_facts"] and all(t["facts"] for t in patient)
        assert sorted(meta["revealed_facts"]) == list(range(meta["n_facts"]))


def test_a_doctor_that_never_answers_is_forced_after_the_budget(tmp_path):
    def reply(req):
        if is_bound(req) or FORCED_NOTE in req.messages[-1].content:
            return "ANSWER: C"
        return "QUESTION: What is the capital of France?" if len(req.messages) % 4 == 2 else "Hmm, let me think."

    res, entries, _ = run(tmp_path, reply, max_turns=4)
    assert value(res, "forced_answer_rate") == 1 and value(res, "premature_answer_rate") == 0
    assert value(res, "question_relevance") == 0 and value(res, "facts_elicited") == 0
    assert value(res, "questions_per_case") == 2 and value(res, "invalid_turn_rate") == pytest.approx(2 / 5)
    assert value(res, "accuracy") == sum(t == 2 for t in targets()) / 3
    for e in entries:
        conv = e["score"]["metadata"]["conversation"]
        assert [t["role"] for t in conv].count("doctor") == 5 and conv[-1]["forced"] is True
        assert {"role": "harness", "text": FORCED_NOTE} in conv
        assert all(t["text"] == DONT_KNOW for t in conv if t["role"] == "patient")


def test_an_unanswered_forced_turn_is_answered_from_the_summary(tmp_path):
    """The forced turn names no option: the final answer comes from a bound-shaped prompt with
    the initial presentation and the revealed facts only."""
    summaries = []

    def reply(req):
        if not is_bound(req):
            return "Do you have a fever?" if FORCED_NOTE not in req.messages[-1].content else "Do you smoke?"
        summaries.append(req.messages[1].content)
        return "ANSWER: A"

    res, entries, _ = run(tmp_path, reply, max_turns=2, limit=1)
    sample = load_bundled("mediq_test.jsonl")[0]
    assert value(res, "accuracy") == float(sample.target == 0) and res.metrics["accuracy"]["n_unscored"] == 0
    assert value(res, "forced_answer_rate") == 1 and value(res, "questions_per_case") == 2
    meta = entries[0]["score"]["metadata"]
    assert meta["values"]["answered_from_summary"] == 1.0 and meta["conversation"][-1]["from_summary"] is True
    facts = [fact_text(f) for f in sample.metadata["facts"]]
    revealed = {facts[i] for i in meta["revealed_facts"]}
    summary = summaries[-1]  # bounds first, the summary last
    assert summary.startswith(f"Case: {sample.input}") and all(f in summary for f in revealed)
    assert not any(f in summary for f in set(facts) - revealed if f not in str(sample.input))


def test_a_case_never_answered_is_unscored_not_wrong(tmp_path):
    res, entries, _ = run(tmp_path, lambda req: "Do you smoke?", max_turns=2)
    assert res.metrics["accuracy"]["n_unscored"] == 3 and value(res, "accuracy") is None
    assert value(res, "forced_answer_rate") == 1 and value(res, "questions_per_case") == 2
    assert all(e["score"]["metadata"]["values"]["answered_from_summary"] == 1.0 for e in entries)


def test_llm_patient_is_routed_to_its_own_model(tmp_path):
    patient = ScriptedBackend(lambda req: "FACTS: 2, 99\nI have had it for a while.")
    patient.fingerprint = lambda: "scripted-patient"  # type: ignore[method-assign]

    def doctor(req):
        if is_bound(req):
            return "ANSWER: A"
        return "QUESTION: Tell me more." if len(req.messages) == 2 else "ANSWER: A"

    aux = {"patient": AuxModel(backend="scripted", model="patient-v1")}
    res, entries, backend = run(tmp_path, doctor, limit=2, aux_models=aux, aux={"patient": patient})
    assert len(patient.generate_calls) == 2 and all("Tell me more." in r.messages[-1].content
                                                    for r in patient.generate_calls)
    # the patient's prompt never reaches the doctor
    assert all("FACTS" not in m.content for r in backend.generate_calls for m in r.messages)
    second_turns = [r for r in backend.generate_calls if not is_bound(r) and len(r.messages) == 4]
    assert all(r.messages[-1].content.startswith("Patient: I have had it for a while.") for r in second_turns)
    assert res.extra["patient"]["kind"] == "llm"
    assert res.extra["aux_models"]["patient"]["fingerprint"] == "scripted-patient"
    for e in entries:
        meta = e["score"]["metadata"]
        assert meta["revealed_facts"] == [1]  # fact 99 does not exist
        assert meta["values"]["facts_elicited"] == pytest.approx(1 / meta["n_facts"])


def test_an_auxiliary_model_no_task_uses_is_refused(tmp_path):
    with pytest.raises(HarnessError, match="turn_judge"):
        run(tmp_path, lambda req: "ANSWER: A", aux_models={"turn_judge": AuxModel()})


def test_mediq_records_are_checked(tmp_path):
    from harness.protocols.interactive import mediq_consult

    rec = {"id": 1, "question": "Q?", "context": ["A man."], "facts": ["1. A man."], "options": {"A": "x", "B": "y"},
           "answer_idx": "B"}
    sample = mediq_consult(rec, 0, {})
    assert sample.input == "A man." and sample.target == 1 and sample.metadata["facts"] == ["1. A man."]
    assert mediq_consult({**rec, "facts": []}, 0, {}) is None  # a knowledge question: no patient
    with pytest.raises(ValueError, match="context"):
        mediq_consult({**rec, "context": "A man."}, 0, {})
    with pytest.raises(ValueError, match="beyond"):
        mediq_consult({**rec, "answer_idx": "D"}, 0, {})
    assert INTERACTIVE.record_info(ctx())["patient"]["threshold"] == 0.35


def test_mediq_local_data(shared_data):
    from harness.data.sources import load_split
    from harness.run.catalog import load_catalog

    cat = load_catalog()
    dev = load_split(cat.task("mediq"), "test", "local", shared_data)
    craft = load_split(cat.task("mediq_craftmd"), "test", "local", shared_data)
    assert len(dev) == 1269 and len(craft) == 140  # 3 dev records have no patient
    full = {s.id: s for s in dev}
    assert all(full[s.id] == s for s in load_bundled("mediq_test.jsonl"))
