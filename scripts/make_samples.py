"""Regenerate the bundled samples in tasks/samples/ from the local data (../shared/data).

Usage: python scripts/make_samples.py DATA_DIR [TASK ...]   (default: every task)
Seeded selection from each task's local splits, kept in source order. Only sets whose licence
allows redistribution are bundled (MedQA, MedMCQA, PubMedQA, MMLU: MIT; MTS-Dialog, ACI-Bench:
CC BY 4.0; CMtMedQA: Apache-2.0; see tasks/NOTICE).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from harness.data.sources import load_local, tasks_dir
from harness.run.catalog import load_catalog

SEED = 0
# split -> number of samples; eval splits ~50 a task (20 a subject for the six MMLU subjects).
COUNTS = {"eval": 50, "fewshot": 20}
MMLU_EVAL = 20
# Generative tasks: fewer, since each sample is a generation (ACI-Bench visits are long).
EVAL_COUNTS = {"mts_dialog_section": 20, "mts_dialog_turn": 20, "cmtmedqa_turn": 20,
               "aci_bench_turn": 10, "aci_bench_note": 5, "mediq": 10, "pqa_cmtmedqa": 40}


def main(data_dir: str, only: list[str]) -> None:
    root = Path(data_dir)
    cat = load_catalog()
    out_dir = tasks_dir() / "samples"
    for spec in cat.tasks.values():
        if only and spec.task not in only:
            continue
        for split, sources in spec.splits.items():
            if sources.bundled is None or sources.local is None:
                continue
            samples = load_local(sources.local, root)
            if split == spec.eval_split:
                n = MMLU_EVAL if spec.group == "mmlu_medical" else EVAL_COUNTS.get(spec.task, COUNTS["eval"])
            else:
                n = COUNTS["fewshot"]
            if len(samples) > n:
                keep = sorted(random.Random(f"{SEED}:{spec.task}:{split}").sample(range(len(samples)), n))
                samples = [samples[i] for i in keep]
            path = out_dir / sources.bundled
            with path.open("w", encoding="utf-8") as f:
                for s in samples:
                    f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
            print(f"{path.name}: {len(samples)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
