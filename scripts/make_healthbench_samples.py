"""Write the bundled HealthBench samples (tasks/samples/healthbench*_test.jsonl) from the
HealthBench example files in shared/data/healthbench (see its MANIFEST_ENTRY.md).

Usage: python scripts/make_healthbench_samples.py DATA_DIR   (DATA_DIR holds healthbench/)

Hand-picked, in source order: one example of each of the seven themes from the first 30 rows of
the main set (with a physician ideal completion, small rubrics), three of the Hard sample and
three of the Consensus slice. Rows are read by the task's own adapter (`healthbench`) and
written in the harness's Sample schema; texts and rubrics are unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.data.sources import tasks_dir
from harness.protocols.rubric import healthbench_row

PICKS = {
    "healthbench_test.jsonl": ("oss_eval_sample.jsonl", [
        "7ebc830a-8dbd-489b-9d61-4d8bacf0db8d",  # emergency_referrals
        "78510411-e03b-4f93-a369-c7e72d2e4908",  # health_data_tasks
        "bbd759b4-8e4d-4db7-bc36-f2e069396c1c",  # communication
        "85408180-238e-4c1b-92c1-55d8ce6c3717",  # complex_responses
        "0e073591-b3e7-4dc8-94d0-dc5aa93ca35c",  # hedging
        "83cf8f2d-2857-4f01-a283-9595d8f4ae8e",  # context_seeking
        "f32ee0c1-ea9c-4cfb-8332-bd9579d23024",  # global_health
    ]),
    "healthbench_hard_test.jsonl": ("hard_sample50_seed42.jsonl", [
        "45b7cc5e", "7eba4984", "90058327",
    ]),
    "healthbench_consensus_test.jsonl": ("consensus_context_seeking_hard_104.jsonl", [
        "af0faba1", "6afbbe65", "ce551b8e",
    ]),
}


def main(data_dir: str) -> None:
    out_dir = tasks_dir() / "samples"
    for out_name, (source, ids) in PICKS.items():
        path = Path(data_dir) / "healthbench" / source
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        picked = [(i, r) for i, r in enumerate(rows) if any(r["prompt_id"].startswith(p) for p in ids)]
        if len(picked) != len(ids):
            raise SystemExit(f"{source}: found {len(picked)} of {len(ids)} picked prompt ids")
        samples = [healthbench_row(r, i, {}) for i, r in picked]
        (out_dir / out_name).write_text("".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in samples),
                                        encoding="utf-8")
        sys.stdout.write(f"{out_name}: {len(samples)} samples from {source}\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
