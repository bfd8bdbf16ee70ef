"""Quality filter: length, medical-term count and density, boilerplate and junk rules.

Domain filtering by a term list with thresholds on count and density is what MMedLM,
HuatuoGPT-II and Apollo do to their corpora; the junk rules are in the spirit of Gopher's
(repeated lines, symbol ratio). A text's word tokens are Latin words / numbers, and single
CJK characters (so Chinese text gets a density too). Hand-written: no maintained library ships
a medical-domain keyword filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from trainers.data.config import QualitySpec

TERMS_FILE = Path(__file__).with_name("medical_terms.txt")
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'/][a-z0-9]+)*|[\u3400-\u9fff]")
_CJK = re.compile(r"[\u3400-\u9fff]")
_MIN_STEM = 3  # a suffix term needs this many letters before it ("april" is no "-pril" drug)
_BOILERPLATE = re.compile(
    r"(cookie|privacy policy|terms of (use|service)|all rights reserved|copyright|©|click here|"
    r"subscribe|sign up|log ?in|newsletter|share (this|on)|follow us|advertisement|javascript|"
    r"page \d+ of \d+|read more|back to top|skip to (main )?content)",
    re.I,
)
_COMMON_CHARS = re.compile(r"[\w\s.,;:!?'\"()\[\]{}%/+\-–—=<>°·•…，。、；：！？（）《》“”‘’]")


@dataclass(frozen=True)
class TermList:
    words: frozenset[str]
    phrases: frozenset[tuple[str, ...]]
    suffixes: tuple[str, ...]
    cjk: tuple[str, ...]

    @property
    def max_phrase(self) -> int:
        return max((len(p) for p in self.phrases), default=1)


@lru_cache(maxsize=8)
def load_terms(path: str | None = None) -> TermList:
    words: set[str] = set()
    phrases: set[tuple[str, ...]] = set()
    suffixes: list[str] = []
    cjk: list[str] = []
    for raw in Path(path or TERMS_FILE).read_text(encoding="utf-8").splitlines():
        line = raw.strip().lower()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            suffixes.append(line[1:])
        elif _CJK.search(line):
            cjk.append(line)
        elif " " in line:
            phrases.add(tuple(line.split()))
        else:
            words.add(line)
    return TermList(frozenset(words), frozenset(phrases), tuple(sorted(suffixes, key=len, reverse=True)),
                    tuple(cjk))


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def term_hits(text: str, terms: TermList) -> tuple[int, int]:
    """(medical-term hits, word tokens). A phrase counts once, not once per word."""
    toks = tokens(text)
    latin = [t for t in toks if not _CJK.fullmatch(t)]
    hits = 0
    i = 0
    while i < len(latin):
        for n in range(min(terms.max_phrase, len(latin) - i), 1, -1):
            if tuple(latin[i:i + n]) in terms.phrases:
                hits += 1
                i += n
                break
        else:
            word = latin[i]
            if word in terms.words or any(
                word.endswith(s) and len(word) - len(s) >= _MIN_STEM for s in terms.suffixes
            ):
                hits += 1
            i += 1
    if terms.cjk and _CJK.search(text):
        hits += sum(text.count(term) for term in terms.cjk)
    return hits, len(toks)


def _line_ratios(text: str) -> tuple[float, float]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return 0.0, 0.0
    boiler = sum(1 for ln in lines if len(ln) < 200 and _BOILERPLATE.search(ln))
    repeated = len(lines) - len(set(lines))
    return boiler / len(lines), repeated / len(lines)


def quality_reason(text: str, spec: QualitySpec) -> str | None:
    """Why `text` fails the quality rules (a short reason, used as a report key), or None."""
    if len(text) < spec.min_chars:
        return "too_short"
    if len(text) > spec.max_chars:
        return "too_long"
    terms = load_terms(spec.terms_file)
    hits, n_tokens = term_hits(text, terms)
    if n_tokens < spec.min_words:
        return "too_few_words"
    boiler, repeated = _line_ratios(text)
    if boiler > spec.max_boilerplate_lines:
        return "boilerplate"
    if repeated > spec.max_duplicate_lines:
        return "repeated_lines"
    odd = len(text) - len(_COMMON_CHARS.findall(text))
    if odd / len(text) > spec.max_symbol_ratio:
        return "symbols"
    if hits < spec.min_terms:
        return "few_medical_terms"
    if hits / n_tokens < spec.min_density:
        return "low_medical_density"
    return None
