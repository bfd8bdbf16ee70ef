"""Our MCQA prompts must equal lm-eval 0.4.13's built-in ones byte for byte."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from harness.data.sources import load_split
from harness.data.spec import ProtocolSpec
from harness.protocols.base import PROTOCOLS, PromptContext
from harness.protocols.formats import FORMATS
from harness.run.catalog import load_catalog

lm_eval = pytest.importorskip("lm_eval")
TASKS = Path(lm_eval.__file__).parent / "tasks"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_medqa_prompt_matches_lmeval(cat):
    ref = _module(TASKS / "medqa/preprocess_medqa.py")
    for s in load_split(cat.task("medqa"), "test", "bundled", None):
        doc = {"sent1": s.input, **{f"ending{i}": c for i, c in enumerate(s.choices)}}
        assert FORMATS.get("medqa").text(s) == ref.doc_to_text(doc)


def test_medmcqa_prompt_matches_lmeval(cat):
    ref = _module(TASKS / "medmcqa/utils_medmcqa.py")
    for s in load_split(cat.task("medmcqa"), "dev", "bundled", None):
        doc = {"question": s.input, **dict(zip(("opa", "opb", "opc", "opd"), s.choices, strict=True))}
        assert FORMATS.get("medmcqa").text(s) == ref.doc_to_text(doc)


def test_pubmedqa_prompt_matches_lmeval(cat):
    ref = _module(TASKS / "pubmedqa/preprocess_pubmedqa.py")
    for s in load_split(cat.task("pubmedqa"), "test", "bundled", None):
        doc = {"QUESTION": s.input, "CONTEXTS": s.metadata["contexts"]}
        assert FORMATS.get("pubmedqa").text(s) == ref.doc_to_text(doc)


def test_mmlu_prompt_matches_lmeval(cat):
    import jinja2

    template = yaml.safe_load((TASKS / "mmlu/default/_default_template_yaml").read_text())
    for subject in ("anatomy", "professional_medicine"):
        task_yaml = yaml.safe_load((TASKS / f"mmlu/default/mmlu_{subject}.yaml").read_text())
        fmt = FORMATS.get("mmlu")
        for s in load_split(cat.task(f"mmlu_{subject}"), "test", "bundled", None):
            doc = {"question": s.input, "choices": list(s.choices)}
            text = jinja2.Template(template["doc_to_text"]).render(**doc)
            assert fmt.description(s) + fmt.text(s) == task_yaml["description"] + text


def test_loglik_requests_use_letter_and_text_continuations(cat):
    s = load_split(cat.task("medqa"), "test", "bundled", None)[0]
    ctx = PromptContext(FORMATS.get("medqa"), ProtocolSpec())
    letters = PROTOCOLS.get("loglik").requests(s, ctx)
    texts = PROTOCOLS.get("loglik_text").requests(s, ctx)
    assert [r.continuation for r in letters] == [" A", " B", " C", " D"]
    assert [r.continuation for r in texts] == [f" {c}" for c in s.choices]
    assert {r.context for r in letters} == {FORMATS.get("medqa").text(s)}


def test_fewshot_is_seeded_per_sample_and_excludes_eval(cat):
    spec = cat.task("medqa")
    pool = tuple(load_split(spec, "dev", "bundled", None))
    evals = load_split(spec, "test", "bundled", None)
    proto = PROTOCOLS.get("loglik")
    ctx = PromptContext(FORMATS.get("medqa"), ProtocolSpec(), 3, pool, spec.fewshot)
    p1 = proto.prompt(evals[0], ctx)
    assert p1 == proto.prompt(evals[0], ctx)
    assert p1.count("Question: ") == 4 and p1.endswith(FORMATS.get("medqa").text(evals[0]))
    other = PromptContext(FORMATS.get("medqa"), ProtocolSpec(), 3, pool,
                          spec.fewshot.model_copy(update={"seed": 99}))
    assert any(proto.prompt(s, ctx) != proto.prompt(s, other) for s in evals[:5])
    eval_ids = {s.id for s in evals}
    assert not eval_ids & {s.id for s in pool}
