"""Task data: record adapters and the sources they are read from."""

from harness.data.adapters import ADAPTERS
from harness.data.sources import load_split, tasks_dir

__all__ = ["ADAPTERS", "load_split", "tasks_dir"]
