"""Statistics shared by juries of judges or graders (judges.jury over stored runs, and the rubric
protocol's grader juries inside `harness run`): Krippendorff's alpha across raters, and the model
family check that flags a judge of the same family as the candidate it judges (self-preference
bias). Pure: no I/O; numpy and the `krippendorff` package, imported when used."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Literal

Level = Literal["interval", "ordinal", "ratio", "nominal"]

# family -> pattern on the normalised model name (lower case, last path part, no file suffix).
# A derivative names its base family too (meditron: llama; biomistral: mistral; medgemma: gemma).
FAMILY_PATTERNS: dict[str, str] = {
    "gpt": r"^(gpt|chatgpt)|^o[1-9](-|$)",
    "llama": r"llama|meditron|vicuna|alpaca|openbiollm",
    "qwen": r"qwen|qwq",
    "smollm": r"smollm",
    "mistral": r"mistral|mixtral|ministral|codestral",
    "gemma": r"gemma",
    "gemini": r"gemini",
    "claude": r"claude",
    "phi": r"^phi[-_.\d]",
    "deepseek": r"deepseek",
    "olmo": r"olmo",
    "falcon": r"falcon",
    "yi": r"^yi[-_.\d]",
    "internlm": r"internlm",
    "baichuan": r"baichuan",
    "glm": r"glm",
    "granite": r"granite",
    "cohere": r"command-r|c4ai|^aya",
}
_SUFFIXES = re.compile(r"\.(gguf|bin|safetensors|pt)$")


def normalise_model_name(name: str) -> str:
    """'hf:HuggingFaceTB/SmolLM2-135M-Instruct' -> 'smollm2-135m-instruct'."""
    base = name.strip().lower()
    if re.match(r"^[a-z_]+:(?!//)", base):  # a backend prefix ("openai:", "hf:"), not a URL
        base = base.split(":", 1)[1]
    base = base.rstrip("/").rsplit("/", 1)[-1]
    return _SUFFIXES.sub("", base)


def model_families(name: str) -> frozenset[str]:
    """Families a model name belongs to; a name no pattern knows falls back to its leading
    word (three letters or more), so two unknown checkpoints of one line still match."""
    base = normalise_model_name(name)
    found = {family for family, pattern in FAMILY_PATTERNS.items() if re.search(pattern, base)}
    if not found:
        m = re.match(r"[a-z]{3,}", base)
        if m:
            found.add(m.group(0))
    return frozenset(found)


def same_family(judge_model: str, candidate_model: str) -> tuple[str, ...]:
    """The families the two names share (empty: none)."""
    return tuple(sorted(model_families(judge_model) & model_families(candidate_model)))


def krippendorff_alpha(rows: Sequence[Sequence[float | None]], level: Level = "interval") -> float | None:
    """Alpha across raters (one row each, None = missing); None where undefined (fewer than two
    raters, no pairable values, or a single value throughout)."""
    import numpy as np

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] == 0:
        return None
    import krippendorff

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    except (ValueError, ZeroDivisionError):  # fewer than two pairable values, or one value only
        return None
    return None if math.isnan(a) else a
