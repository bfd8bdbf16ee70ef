"""The run engine: config (RunConfig), catalog (tasks and suites from YAML), planning (task ->
samples -> requests), execution (requests to the backends in resumable chunks), aggregate
(scores -> metrics), runner (the run lifecycle), folder (RunFolder: config.json, run.json,
samples.jsonl), records (RunRecord), merge (shards), report (tables)."""

from harness.run.config import RunConfig
from harness.run.records import RunRecord, read_record

__all__ = ["RunConfig", "RunRecord", "read_record"]
