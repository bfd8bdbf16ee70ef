"""Typed, validated settings of data processing (the `data:` and `filters:` blocks of a stage)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from harness.schema import StrictModel


class DataSourceSpec(StrictModel):
    """One input of a stage: a registered reader over a file (relative to the data folder) or a
    harness task's split."""

    reader: str = Field(description="Registered reader (see trainers.data.sources.READERS).")
    path: str | None = Field(default=None, description="File, relative to the data folder (or absolute).")
    task: str | None = Field(default=None, description="Harness task id, for the benchmark readers.")
    split: str = Field(default="train", description="Task split, for the benchmark readers.")
    limit: int | None = Field(default=None, ge=1, description="Keep the first N records read.")
    options: dict[str, Any] = Field(default_factory=dict, description="Reader options.")
    quality: bool = Field(default=True, description="Apply the stage's quality filter to this source "
                          "(curated data such as benchmark train splits may not need it).")

    @model_validator(mode="after")
    def _one_input(self) -> DataSourceSpec:
        if (self.path is None) == (self.task is None):
            raise ValueError(f"reader {self.reader!r}: give exactly one of path or task")
        return self


class QualitySpec(StrictModel):
    """Document quality rules: length, medical-term count and density (MMedLM, HuatuoGPT-II and
    Apollo filter corpora by domain keywords), and boilerplate / junk heuristics."""

    min_chars: int = Field(default=20, ge=0, description="Drop shorter texts.")
    max_chars: int = Field(default=100_000, ge=1, description="Drop longer texts.")
    min_words: int = Field(default=5, ge=0, description="Drop texts with fewer word tokens.")
    min_terms: int = Field(default=2, ge=0, description="Least number of medical-term hits.")
    min_density: float = Field(default=0.02, ge=0.0, le=1.0,
                               description="Least medical-term hits per word token.")
    max_boilerplate_lines: float = Field(default=0.3, ge=0.0, le=1.0,
                                         description="Most fraction of lines that look like web boilerplate.")
    max_duplicate_lines: float = Field(default=0.3, ge=0.0, le=1.0,
                                       description="Most fraction of lines repeated within the text.")
    max_symbol_ratio: float = Field(default=0.25, ge=0.0, le=1.0,
                                    description="Most fraction of characters that are neither letters, "
                                    "digits, spaces nor common punctuation.")
    terms_file: str | None = Field(default=None, description="Own term list; default: the shipped one.")


class DedupSpec(StrictModel):
    exact: bool = Field(default=True, description="Drop records whose normalised text hashes alike.")
    near: bool = Field(default=True, description="Drop near-duplicates (MinHash LSH, datasketch).")
    threshold: float = Field(default=0.8, gt=0.0, le=1.0, description="Jaccard similarity of near-duplicates.")
    num_perm: int = Field(default=128, ge=16, description="MinHash permutations.")
    shingle: int = Field(default=5, ge=1, description="Word (or CJK character) n-gram size of shingles.")


class LeakageSpec(StrictModel):
    """Overlap with every harness task's test split: Apollo's 64-character and lm-eval's 13-gram
    decontamination. Leaked records are reported and dropped."""

    enabled: bool = True
    chars: int = Field(default=64, ge=8, description="Characters of an overlapping substring (Apollo).")
    ngram: int = Field(default=13, ge=3, description="Words of an overlapping n-gram (lm-eval).")
    min_matches: int = Field(
        default=1, ge=1,
        description="Distinct overlapping windows with one test item that make a leak. 1 is the published "
        "definition; vignette phrasing shared across MedQA-style questions trips it, so raise it to ask "
        "for longer overlaps.")
    source: Literal["auto", "local", "bundled"] = Field(
        default="auto", description="Test data: auto = local files with a data folder, else the bundled samples.")
    tasks: list[str] | None = Field(default=None, description="Task ids to check; None = every task.")


class FilterSpec(StrictModel):
    quality: QualitySpec | None = Field(default_factory=QualitySpec, description="None disables it.")
    pii: bool = Field(default=True, description="Mask names, dates, phones, e-mails, record numbers, addresses.")
    dedup: DedupSpec | None = Field(default_factory=DedupSpec, description="None disables it.")
    leakage: LeakageSpec = Field(default_factory=LeakageSpec)
