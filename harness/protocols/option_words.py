"""The last rule of the `choice` extractor: a short reply that names one option in other words.

Word overlap, not an embedding model, because it must be deterministic, offline and cheap, and
it only decides short replies (at most _NEAR_MAX_WORDS words) that no explicit rule read.
"""

from __future__ import annotations

import re

from harness.protocols.answer_patterns import _ABBREVIATIONS, _I, _UNSURE, _Question

_STOPWORDS = frozenset(
    "a an the of to in on for with and or is are was were be been this that these it its his her their "
    "patient patients most likely best next step should would will can may has have had as by at from "
    "answer option choice correct i we you he she they do does".split()
)
_NEGATING = re.compile(r"\b(?:not|no|never|none|neither|nor|except|rather|instead|unlikely|excluded|without|avoid\w*|"
                       r"contraindicated|stop|discontinue|withhold)\b|n't\b", _I)
_NEAR_MAX_WORDS = 20  # only a short reply is matched to an option by its words
_NEAR_RECALL = 0.6  # share of the option's words the reply must hold


def _content_words(text: str) -> set[str]:
    """Words that carry meaning, singular, abbreviations expanded; a capital single letter kept
    ("type A")."""
    out: set[str] = set()
    for w in re.findall(r"[^\W_]+", text):
        if len(w) == 1 and w.isupper():
            out.add(w)
            continue
        low = w.lower()
        if low in _STOPWORDS:
            continue
        for part in (_ABBREVIATIONS[low][0].split() if low in _ABBREVIATIONS else [low]):
            out.add(re.sub(r"(?:es|s)$", "", part) if len(part) > 4 else part)
    return out


def near_option(s: str, q: _Question) -> int | None:
    """The one option a short reply names in other words ("Give intravenous fluids" for
    "Administer the intravenous fluids", "Subacute thyroiditis" for "Subacute granulomatous
    thyroiditis"): it holds words of that option that no other option has, none of any other
    option's own, most of that option's words, and it negates nothing."""
    if len(s.split()) > _NEAR_MAX_WORDS or _NEGATING.search(s) or _UNSURE.search(s):
        return None
    reply = _content_words(s)
    words = {i: _content_words(q.choices[i]) for i, _ in q.options}
    # an option's own words (no other option has them) decide which option the reply names
    named = []
    for i, own in words.items():
        others = set().union(*(w for j, w in words.items() if j != i))
        if own & reply - others:
            named.append(i)
    if len(named) != 1:
        return None
    i = named[0]
    return i if len(words[i] & reply) / len(words[i]) >= _NEAR_RECALL else None
