"""Task data: the task YAML schema (spec), the sources a split is read from (local files, the
hub at a pinned revision, bundled samples) and the record adapters that turn rows into Samples
(family-specific adapters register from their protocol modules)."""

from harness.data.adapters import ADAPTERS
from harness.data.sources import load_split, tasks_dir

__all__ = ["ADAPTERS", "load_split", "tasks_dir"]
