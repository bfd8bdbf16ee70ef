"""Export our multiple-choice tasks as lm-eval task folders (`harness export-lmeval OUT_DIR`).

Each task becomes OUT_DIR/medllm_<task>.yaml plus OUT_DIR/data/<task>.jsonl. The data file
holds, per sample, our exact zero-shot `loglik` prompt, the answer labels and the target, and
the YAML points lm-eval at it (`dataset_path: json`), so `lm_eval --include_path OUT_DIR
--tasks medllm_medqa` scores the same requests `harness run --tasks medqa` does. Prompts are
stored rather than re-expressed as Jinja so that no template can drift from our formats.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.data.sources import SourceKind, load_split
from harness.errors import HarnessError
from harness.protocols.base import PROTOCOLS, PromptContext
from harness.protocols.formats import FORMATS
from harness.protocols.mcqa import LoglikProtocol
from harness.run.catalog import load_catalog

TASK_PREFIX = "medllm_"


@dataclass(frozen=True)
class ExportedTask:
    task: str
    lm_task: str
    yaml: Path
    data: Path
    n_samples: int


def mcqa_tasks() -> list[str]:
    """Our tasks scored by the `loglik` protocol (the multiple-choice ones)."""
    return sorted(name for name, spec in load_catalog().tasks.items() if "loglik" in spec.protocols)


def export_lmeval(out_dir: Path, tasks: Sequence[str] | None = None, source: SourceKind = "bundled",
                  data_dir: Path | None = None, limit: int | None = None) -> list[ExportedTask]:
    catalog = load_catalog()
    names = list(tasks) if tasks else mcqa_tasks()
    out_dir = out_dir.resolve()
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    protocol = PROTOCOLS.get("loglik")
    assert isinstance(protocol, LoglikProtocol)
    exported = []
    for name in names:
        spec = catalog.task(name)
        if "loglik" not in spec.protocols:
            raise HarnessError(f"task {name!r} is not a multiple-choice task (no loglik protocol)")
        _, options = spec.protocol("loglik")
        ctx = PromptContext(FORMATS.get(spec.format), options)
        samples = load_split(spec, spec.eval_split, source, data_dir)[:limit]
        data = out_dir / "data" / f"{name}.jsonl"
        with data.open("w", encoding="utf-8") as f:
            for s in samples:
                labels = list(protocol.continuations(s, ctx))
                f.write(json.dumps({"id": s.id, "prompt": protocol.prompt(s, ctx), "choices": labels,
                                    "target": s.target}, ensure_ascii=False) + "\n")
        lm_task = f"{TASK_PREFIX}{name}"
        config = {
            "task": lm_task,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "prompt",
            "doc_to_choice": "choices",
            "doc_to_target": "target",
            "target_delimiter": " ",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": spec.version, "exported_from": f"medllm-harness task {name}",
                         "data_source": source},
        }
        yaml_path = out_dir / f"{lm_task}.yaml"
        # JSON is valid YAML and needs no quoting rules for prompts or paths.
        yaml_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        exported.append(ExportedTask(name, lm_task, yaml_path, data, len(samples)))
    return exported
