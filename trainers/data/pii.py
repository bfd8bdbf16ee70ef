"""Sensitive-information scrubber: detect and mask names, dates, phone numbers, e-mail
addresses, record numbers and postal addresses (the HIPAA Safe Harbor identifiers that show up
in clinical text).

Detection is rule-based, in the style of the i2b2 / physionet deid scripts: spaCy-model-based
tools (Presidio, scrubadub's name detectors) need model downloads this project cannot make. Names
are caught where a title or a label marks them ("Dr. Kumar", "Patient: Jane Roe"), and as a known
given name followed by a known surname ("Maria Garcia"; the US name lists that Faker ships), which
keeps eponyms ("Graves disease", "Wilson disease") out.
Only counts per kind leave this module; the originals are never logged.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cache

KINDS = ("EMAIL", "RECORD_ID", "PHONE", "ADDRESS", "DATE", "NAME")

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_NAME_WORD = r"[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
_FULL_NAME = rf"{_NAME_WORD}(?:\s+[A-Z]\.)?(?:\s+{_NAME_WORD}){{0,2}}"
_STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
           r"Circle|Highway|Hwy|Parkway|Pkwy)\b")
_YEAR = r"(?:19|20)\d{2}"
# Capitalised words that follow a title but are not names ("Dr. Smith" vs "Doctor Office").
_NOT_NAMES = frozenset({
    "The", "This", "That", "Office", "Visit", "Note", "Notes", "Appointment", "Department", "Clinic",
    "Hospital", "Is", "Was", "Has", "Will", "And", "Or", "Of", "In", "On", "At", "To", "For",
})

_PATTERNS: dict[str, list[re.Pattern[str]]] = {
    "EMAIL": [re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")],
    "RECORD_ID": [
        # a label, then an identifier holding at least one digit
        re.compile(
            r"\b(?:MRN|medical record (?:number|no\.?|#)|record (?:number|no\.?|#)|patient id|"
            r"account (?:number|no\.?|#)|acct\.? ?(?:no\.?|#)|chart (?:number|no\.?|#)|"
            r"health plan (?:number|no\.?|#)|insurance id|member id|ssn|social security (?:number|no\.?))"
            r"\s*(?:is|:|#|=)?\s*((?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{3,})\b",
            re.I,
        ),
        re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),  # SSN shape
    ],
    "PHONE": [
        re.compile(r"(?<![\w/.-])(?:\+?1[\s.-]?)?\(\d{3}\)\s?\d{3}[\s.-]\d{4}\b"),
        re.compile(r"(?<![\w/.-])(?:\+?1[\s.-])?\d{3}[.-]\d{3}[.-]\d{4}\b"),
        re.compile(r"(?<![\w/.])\+\d{1,3}(?:[\s.-]\d{1,4}){2,4}\b"),
        re.compile(r"\b(?:phone|tel|telephone|mobile|fax|pager)\b\.?\s*(?:no\.?|number|#)?\s*:?\s*"
                   r"(\d[\d\s().-]{6,}\d)\b", re.I),
    ],
    "ADDRESS": [
        # number, capitalised street words, a street suffix; then optionally unit, city, state, ZIP
        re.compile(
            rf"\b\d{{1,6}}\s+(?:[A-Z][a-z]+\s+){{1,3}}{_STREET}\.?"
            r"(?:,?\s+(?:Apt|Apartment|Suite|Unit)\.?\s*#?\w+)?"
            r"(?:,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+)?)?(?:,?\s*[A-Z]{2}\b)?(?:\s+\d{5}(?:-\d{4})?\b)?"
        ),
        re.compile(r"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)?,\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\b"),  # City, ST 02115
    ],
    "DATE": [
        # one separator throughout, so ranges and intervals ("1.5-54", "15-3.26") are no dates
        re.compile(r"(?<![\d./-])\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})(?![\d/]|\.\d)"),
        re.compile(r"(?<![\d./-])\d{1,2}-\d{1,2}-(?:\d{4}|\d{2})(?![\d-]|\.\d)"),
        re.compile(rf"(?<![\d./-])\d{{1,2}}\.\d{{1,2}}\.{_YEAR}(?![\d.])"),
        re.compile(rf"(?<![\d./-]){_YEAR}-\d{{2}}-\d{{2}}(?![\d-])"),
        re.compile(rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b", re.I),
        re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}\b", re.I),
        re.compile(r"(?:\bDOB\b|\bD\.O\.B\.|\b[Dd]ate of birth\b|\b[Bb]orn on\b)\s*:?\s*"
                   r"(\d[\d/.-]*\d|[A-Z][a-z]+\.? \d{1,2},? \d{4})"),
    ],
    "NAME": [
        re.compile(rf"\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof)\.?\s+({_FULL_NAME})"),
        re.compile(rf"\b(?:Doctor|Nurse|Professor)\s+({_FULL_NAME})"),
        re.compile(rf"\b(?:[Pp]atient(?:'s)? name|[Nn]ame|[Pp]atient|[Pp]t|[Ss]igned(?: by)?|[Ss]pouse|"
                   rf"[Nn]ext of kin|[Gg]uardian)[ \t]*:[ \t]*({_FULL_NAME})"),
    ],
}


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def _span(match: re.Match[str], kind: str) -> Span | None:
    """A pattern with a group masks only the group (the label or title stays: "Dr. [NAME]",
    "MRN: [RECORD_ID]"); a name whose first word is a common capitalised non-name ("Dr. Office")
    is no name."""
    group = 1 if match.re.groups else 0
    if kind == "NAME" and match.group(group).split()[0] in _NOT_NAMES:
        return None
    start, end = match.span(group)
    return Span(start, end, kind)


_NAME_PAIR = re.compile(rf"\b({_NAME_WORD})(?:\s+[A-Z]\.)?\s+({_NAME_WORD})\b")


@cache
def _name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """Given names and surnames from Faker's en_US person provider (MIT licensed data)."""
    from faker.providers.person.en_US import Provider

    given = frozenset(Provider.first_names_female) | frozenset(Provider.first_names_male)
    return given, frozenset(Provider.last_names)


def _gazetteer_names(text: str) -> list[Span]:
    given, surnames = _name_lists()
    return [Span(m.start(), m.end(), "NAME") for m in _NAME_PAIR.finditer(text)
            if m.group(1) in given and m.group(2) in surnames]


def find_pii(text: str) -> list[Span]:
    """Non-overlapping spans, earlier kinds in KINDS winning ties (an e-mail is not a name)."""
    spans: list[Span] = []
    for kind in KINDS:
        found = [s for p in _PATTERNS[kind] for s in (_span(m, kind) for m in p.finditer(text))]
        if kind == "NAME":
            found += _gazetteer_names(text)
        for span in found:
            if span is None or span.end <= span.start:
                continue
            if any(s.start < span.end and span.start < s.end for s in spans):
                continue
            spans.append(span)
    return sorted(spans, key=lambda s: s.start)


def mask_pii(text: str) -> tuple[str, Counter[str]]:
    """`text` with every detected identifier replaced by [KIND], and the counts per kind."""
    spans = find_pii(text)
    counts: Counter[str] = Counter(s.kind for s in spans)
    if not spans:
        return text, counts
    out: list[str] = []
    pos = 0
    for s in spans:
        out.append(text[pos:s.start])
        out.append(f"[{s.kind}]")
        pos = s.end
    out.append(text[pos:])
    return "".join(out), counts


class PIIScrubber:
    """Masks strings and accumulates counts per kind across calls (for the data report)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.records_changed = 0
        self._changed = False

    def __call__(self, text: str) -> str:
        masked, counts = mask_pii(text)
        if counts:
            self.counts.update(counts)
            self._changed = True
        return masked

    def end_record(self) -> None:
        if self._changed:
            self.records_changed += 1
        self._changed = False
