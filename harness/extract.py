"""Extract a chosen option from free text. Returns no answer when unsure (two different
letters, none at all) rather than guessing: unsure answers are unscored, not wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Extraction:
    index: int | None
    method: str


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def extract_choice(text: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> Extraction:
    """`labels` are the answer tokens (letters, or words such as yes/no/maybe)."""
    cleaned = text.replace("*", "").strip()
    if not cleaned:
        return Extraction(None, "empty")
    label_alt = "|".join(re.escape(lab) for lab in labels)
    flags = re.IGNORECASE
    lower_labels = [lab.lower() for lab in labels]

    # 1. An explicit statement: "answer is (C)", "Answer: c".
    explicit = re.findall(
        rf"answer\s*(?:is|:)?\s*(?:option\s*)?[\(\[]?\b({label_alt})\b[\)\]]?", cleaned, flags
    )
    found = {m.lower() for m in explicit}
    if len(found) == 1:
        return Extraction(lower_labels.index(found.pop()), "explicit")
    if len(found) > 1:
        return Extraction(None, "ambiguous_explicit")

    # 2. The reply starts with a label: "C", "C)", "(C) Ibuprofen", "yes.".
    start = re.match(rf"^[\(\[]?({label_alt})(?:[\)\]\.:,]|\s|$)", cleaned, flags)
    if start and (len(start.group(1)) > 1 or start.group(1).isupper() or len(cleaned) <= 3):
        others = set(re.findall(rf"(?<![\w'])({label_alt})(?![\w'])", cleaned[start.end():]))
        if others - {start.group(1)}:
            return Extraction(None, "ambiguous_labels")
        return Extraction(lower_labels.index(start.group(1).lower()), "leading_label")

    # 3. Exactly one option text appears verbatim (normalised).
    norm_text = _norm(cleaned)
    hits = {i for i, c in enumerate(choices) if _norm(c) and _norm(c) in norm_text}
    if len(hits) == 1:
        return Extraction(hits.pop(), "option_text")

    # 4. Exactly one standalone label anywhere (upper-case letters only, to skip "a"/"I").
    if all(len(lab) == 1 for lab in labels):
        standalone = set(re.findall(rf"(?<![\w'])({label_alt})(?![\w'])", cleaned))
        if len(standalone) == 1:
            return Extraction(labels.index(standalone.pop()), "standalone_label")
        if len(standalone) > 1:
            return Extraction(None, "ambiguous_labels")
    else:
        words = {w for w in re.findall(r"\w+", cleaned.lower()) if w in lower_labels}
        if len(words) == 1:
            return Extraction(lower_labels.index(words.pop()), "label_word")
        if len(words) > 1:
            return Extraction(None, "ambiguous_labels")
    return Extraction(None, "no_label")
