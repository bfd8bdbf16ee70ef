"""Task data: the task YAML schema (spec), the sources a split is read from (local files, the
hub at a pinned revision, a pinned file at a URL, bundled samples), the data cache those URL files
are downloaded to and verified in (remote), and the record adapters that turn rows into Samples
(family-specific adapters register from their protocol modules)."""

from harness.data.adapters import ADAPTERS
from harness.data.remote import data_cache_dir
from harness.data.sources import load_split, read_split, tasks_dir

__all__ = ["ADAPTERS", "data_cache_dir", "load_split", "read_split", "tasks_dir"]
