"""Whether an answer statement or an option mention is hedged away: inside a conditional
("if it were a child, the answer would be A") or negated ("not C", "C is wrong"). Used by the
extractors of harness.protocols.extract before they count a statement or a mention.
"""

from __future__ import annotations

import re

from harness.protocols.answer_patterns import _I, _LOOKBACK, _NEG_AFTER, _NEG_BEFORE

_IF = re.compile(r"\b(?:if|assuming|suppose|supposing|unless|hypothetically|imagine|"
                 r"were[ \t]+(?:it|this|the|she|he))\b", _I)
_WOULD = re.compile(r"\b(?:would|could|might)\b|'d\b", _I)


_IF_AFTER = re.compile(r"\b(?:if|unless|were[ \t]+it[ \t]+not|had[ \t]+it[ \t]+not)\b", _I)


def hypothetical(s: str, start: int, end: int) -> bool:
    """Whether a statement sits in a conditional: "If it were a child, the answer would be A",
    "Ibuprofen would be first line if not for the ulcer"."""
    sentence = max(s.rfind(c, 0, start) for c in ".!?\n;") + 1
    before = _IF.search(s, sentence, start)
    if before is not None and _WOULD.search(s, before.end(), end) is not None:
        return True
    ends = [i for i in (s.find(c, end) for c in ".!?\n;") if i >= 0]
    clause_end = min(ends) if ends else len(s)
    would = _WOULD.search(s, end, clause_end)
    return would is not None and _IF_AFTER.search(s, would.end(), clause_end) is not None


_NON_BEFORE = re.compile(r"\bnon[ \t]*-?[ \t]*$", _I)  # "Non-Heliobacter pylori infection" is not option C


def negated(s: str, start: int, end: int) -> bool:
    """Whether a mention is negated: "not C", "C is incorrect", "non-C"."""
    return bool(_NEG_BEFORE.search(s, max(0, start - _LOOKBACK), start) or _NEG_AFTER.match(s, end)
                or _NON_BEFORE.search(s, max(0, start - 8), start))
