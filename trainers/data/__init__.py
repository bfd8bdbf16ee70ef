"""Data processing for training: readers, quality filter, PII masking, de-duplication, the
leakage check against the harness's test splits, and formatting for CP / IFT / HA."""

from trainers.data.config import DataSourceSpec, DedupSpec, FilterSpec, LeakageSpec, QualitySpec
from trainers.data.pipeline import DataReport, prepare_records
from trainers.data.records import ChatRecord, PreferenceRecord, TextRecord, TrainRecord

__all__ = [
    "ChatRecord",
    "DataReport",
    "DataSourceSpec",
    "DedupSpec",
    "FilterSpec",
    "LeakageSpec",
    "PreferenceRecord",
    "QualitySpec",
    "TextRecord",
    "TrainRecord",
    "prepare_records",
]
