"""Write lm-eval 0.4.13 task folders that run its BUILT-IN medqa_4options / medmcqa / pubmedqa
tasks on our local data files, on exactly the samples (and in the order) our harness scores.

Shared by tests/test_lmeval_parity.py and benchmarks/mcqa_vs_lmeval.py. The samples come from
our own loaders (`load_split`), then are converted back into the record schema each lm-eval
task expects, so doc i of lm-eval's task is sample i of ours.

Each task YAML `include:`s lm-eval's installed YAML by absolute path (located at run time) and
overrides only where the data comes from; the prompt code (`!function doc_to_text`) and the
choices stay lm-eval's own. All YAMLs go into ONE folder (a repeated --include_path keeps only
the last one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASETS = ("medqa", "medmcqa", "pubmedqa")


@dataclass(frozen=True)
class _Spec:
    builtin: str  # path of the built-in YAML under lm_eval/tasks/
    lm_task: str  # name of our local variant
    convert: Callable[[Any], dict[str, Any]]


def _medqa(s: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": s.id, "sent1": s.input, "label": int(s.target)}
    for k, choice in enumerate(s.choices):
        rec[f"ending{k}"] = choice
    return rec


def _medmcqa(s: Any) -> dict[str, Any]:
    a, b, c, d = s.choices
    return {"id": s.id, "question": s.input, "opa": a, "opb": b, "opc": c, "opd": d,
            "cop": int(s.target)}


def _pubmedqa(s: Any) -> dict[str, Any]:
    return {"id": s.id, "pubid": s.metadata["pmid"], "QUESTION": s.input,
            "CONTEXTS": list(s.metadata["contexts"]), "final_decision": s.choices[int(s.target)]}


SPECS: dict[str, _Spec] = {
    "medqa": _Spec("medqa/medqa.yaml", "medqa_4options_local", _medqa),
    "medmcqa": _Spec("medmcqa/medmcqa.yaml", "medmcqa_local", _medmcqa),
    "pubmedqa": _Spec("pubmedqa/pubmedqa.yaml", "pubmedqa_local", _pubmedqa),
}


def lm_task_name(dataset: str) -> str:
    return SPECS[dataset].lm_task


def builtin_yaml(dataset: str) -> Path:
    import lm_eval

    path = Path(lm_eval.__file__).resolve().parent / "tasks" / SPECS[dataset].builtin
    if not path.is_file():
        raise FileNotFoundError(f"lm-eval's built-in task YAML is missing: {path}")
    return path


def our_samples(dataset: str, data_dir: Path, limit: int | None) -> list[Any]:
    """The samples `harness run --data-source local --limit N` scores, in its order."""
    from harness.data.sources import load_split
    from harness.run.catalog import load_catalog

    spec = load_catalog().task(dataset)
    samples = load_split(spec, spec.eval_split, "local", Path(data_dir))
    return samples[:limit] if limit is not None else samples


@dataclass(frozen=True)
class LocalTasks:
    folder: Path  # pass as include_path / --include_path
    tasks: dict[str, str]  # our dataset name -> lm-eval task name
    samples: dict[str, list[Any]]  # our dataset name -> our Samples, in doc order

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks.values())


def write_local_tasks(
    data_dir: Path, out_dir: Path, datasets: Sequence[str], limit: int | None
) -> LocalTasks:
    """Write <out_dir>/data/<dataset>.jsonl and <out_dir>/tasks/<lm task>.yaml for each
    dataset; return the task folder, the lm-eval task names and our samples."""
    out_dir = Path(out_dir).resolve()
    data_out, task_out = out_dir / "data", out_dir / "tasks"
    data_out.mkdir(parents=True, exist_ok=True)
    task_out.mkdir(parents=True, exist_ok=True)
    tasks: dict[str, str] = {}
    all_samples: dict[str, list[Any]] = {}
    for name in datasets:
        if name not in SPECS:
            raise ValueError(f"unknown dataset {name!r} (choose from {', '.join(SPECS)})")
        spec = SPECS[name]
        samples = our_samples(name, Path(data_dir), limit)
        jsonl = data_out / f"{name}.jsonl"
        with jsonl.open("w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps(spec.convert(s), ensure_ascii=False) + "\n")
        # JSON is a subset of YAML: no quoting surprises with odd paths.
        cfg = {
            "include": str(builtin_yaml(name)),
            "task": spec.lm_task,
            "tag": None,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(jsonl)}},
            "training_split": None,
            "validation_split": None,
            "test_split": "test",
            "fewshot_split": None,
        }
        (task_out / f"{spec.lm_task}.yaml").write_text(json.dumps(cfg, indent=2) + "\n",
                                                        encoding="utf-8")
        tasks[name] = spec.lm_task
        all_samples[name] = samples
    return LocalTasks(task_out, tasks, all_samples)


def lmeval_task_objects(local: LocalTasks) -> dict[str, Any]:
    """lm-eval Task objects for the written folder, keyed by our dataset name."""
    from lm_eval.tasks import TaskManager

    loaded = TaskManager(include_path=str(local.folder)).load(local.task_names)
    return {ds: loaded["tasks"][lm] for ds, lm in local.tasks.items()}


def check_prompts(local: LocalTasks, n: int = 5) -> int:
    """Compare lm-eval's context/continuations with ours for the first n docs of each task;
    raise AssertionError on the first difference. Returns the number of docs checked."""
    from harness.protocols.base import PROTOCOLS, PromptContext
    from harness.protocols.formats import FORMATS
    from harness.run.catalog import load_catalog
    from harness.types import LoglikelihoodRequest

    catalog = load_catalog()
    tasks = lmeval_task_objects(local)
    checked = 0
    for ds, task in tasks.items():
        spec = catalog.task(ds)
        _, opts = spec.protocol("loglik")
        ctx = PromptContext(FORMATS.get(spec.format), opts)
        proto = PROTOCOLS.get("loglik")
        docs = list(task.test_docs())
        samples = local.samples[ds]
        if len(docs) != len(samples):
            raise AssertionError(f"{ds}: lm-eval has {len(docs)} docs, we have {len(samples)}")
        delim = task.config.target_delimiter
        for doc, sample in list(zip(docs, samples, strict=True))[:n]:
            assert doc["id"] == sample.id, (ds, doc["id"], sample.id)
            theirs = (task.doc_to_text(doc),
                      tuple(f"{delim}{c}" for c in task.doc_to_choice(doc)),
                      task.doc_to_target(doc))
            reqs = [r for r in proto.requests(sample, ctx) if isinstance(r, LoglikelihoodRequest)]
            ours = (reqs[0].context, tuple(r.continuation for r in reqs), sample.target)
            target = theirs[2]
            if isinstance(target, str):  # pubmedqa: the answer word
                target = task.doc_to_choice(doc).index(target)
            theirs = (theirs[0], theirs[1], target)
            if theirs != ours:
                raise AssertionError(
                    f"{ds} sample {sample.id}: prompts differ\n"
                    f"lm-eval: {theirs!r}\nours:    {ours!r}"
                )
            checked += 1
    return checked
