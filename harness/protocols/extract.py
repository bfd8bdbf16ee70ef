"""Extract the chosen option from a model's free text.

Extractors are registered in EXTRACTORS; each is `(text, labels, choices) -> Extraction`, where
`labels` are the answer tokens (letters, or words such as yes/no/maybe) and `choices` the option
texts. Returning no answer (index None) when unsure beats guessing: unsure answers are unscored,
not wrong, and `method` says why, so the extraction-failure rate can be broken down.

- `choice` (default), for short replies: the one answer the text commits to. Every commitment
  must agree, so "A. Propylthiouracil ... The correct answer is D." is unsure, and so is a
  chain of thought that states two different answers.
- `last_answer`, for chain-of-thought text that discusses several options and then concludes:
  the final explicit statement wins; two different answers in the closing statement, or no
  conclusion at all, are unsure.

Hand-written rules: no maintained library extracts multiple-choice answers (lm-eval and
simple-evals keep one regex per task). They run in order of confidence: explicit statements
("the answer is (C)", "\\boxed{C}", "答案是C"), then a label opening a line ("C) Aspirin"),
then a mention of exactly one label or option text in running text.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from harness.registry import Registry


@dataclass(frozen=True)
class Extraction:
    index: int | None
    method: str


Extractor = Callable[[str, tuple[str, ...], tuple[str, ...]], Extraction]
EXTRACTORS: Registry[Extractor] = Registry("extractor", families=True)
DEFAULT_EXTRACTOR = "choice"

# Where a label token sits decides how much evidence it needs: after "the answer is" almost
# none; opening a line, it must stand alone ("C)", not "C diff"); in running text, more still.
Mode = Literal["explicit", "lead", "running"]
CONFLICT = -1  # a label followed by another option's text: "C) Ibuprofen" when C is Aspirin
AMBIGUOUS = -2  # two labels joined: "A or B", "A and C", "yes/no"

_I = re.IGNORECASE
# After a bare label, what lets it stand alone: the end, punctuation, a conjunction or a verb
# ("C because ...", "B is right"); not a noun ("A patient", "B cells", "No evidence").
_STANDALONE = re.compile(
    r"[ \t]*(?:$|\n|[^\w\s]|(?:or|and|but|nor|because|since|as|is|was|would|seems|should|must|"
    r"appears|looks|fits|it)\b)",
    _I,
)
_WORD_LETTERS = frozenset({"A", "I"})  # capital letters that are also English words
_GENUS = re.compile(r"\.[ \t]+[a-z]")  # "E. coli", "H. pylori": an abbreviation, not option E
# Words that make a following capital letter part of a name ("vitamin A", "hepatitis B").
_NAME_BEFORE = re.compile(
    r"\b(?:vitamin|hepatitis|hep|type|group|class|stage|grade|factor|phase|category|schedule|"
    r"cluster|lead|plan|part|section|zone|hemophilia|influenza|protein|kinase|complex|fibers?|"
    r"wave|step|level|tier|figure|table|appendix|blood)[ \t]+$",
    _I,
)
_NEG_BEFORE = re.compile(
    r"(?:\b(?:not|never|no|except|than|instead[ \t]+of|rule[ \t]+out|ruled[ \t]+out|excluding|"
    r"exclude|avoid|without)|n't)[ \t]+(?:[a-z]+[ \t]+)?(?:(?:option|choice|answer)[ \t]+)?$",
    _I,
)
_NEG_AFTER = re.compile(
    r"[ \t]+(?:(?:is|are|was|were|should|would|must|can|could|does|do|did|will|be|been|seems?)"
    r"[ \t]+){0,3}(?:not\b|never\b|unlikely\b|incorrect\b|wrong\b|false\b|ruled[ \t]+out|"
    r"excluded\b|eliminated\b)|[ \t]+\w+n't\b",
    _I,
)
_JOINER = re.compile(r"[ \t]*(?:(?:,|/|&|\bor\b|\band\b|\bnor\b)[ \t]*)+(?:(?:option|choice)[ \t]+)?", _I)
_LOOKBACK = 48  # characters searched before a mention for a negation or a name; keeps long texts linear
_JOINED_BEFORE = re.compile(r"(?:,|/|&|\bor\b|\band\b)[ \t]*$", _I)
_SEPARATOR = re.compile(r"[ \t]*[\.\)\(\[\]:,;=\-–—]*[ \t]*")
# After a bracketed label a full stop ends the sentence: "... acetaminophen (B). Ibuprofen (A) is ..."
_BRACKET_SEPARATOR = re.compile(r"[ \t]*[\(\[:,;=\-–—]*[ \t]*")
_REFUSAL = re.compile(
    r"\bas an ai\b|\bi(?:'m| am) (?:just |only )?an? (?:ai|language model)|"
    r"\b(?:i|we) (?:cannot|can't|can not|am unable to|'m unable to|am not able to|won't|will not) "
    r"(?:provide|give|offer|answer|recommend|help|assist|diagnose)|"
    r"\bconsult (?:a|your|with a|with your) (?:doctor|physician|healthcare|medical)|"
    r"\bnot (?:qualified|able) to (?:provide|give)|\bi'm sorry, but\b",
    _I,
)
_UNSURE = re.compile(
    r"\bi (?:don't|do not) know\b|\bnot sure\b|\bunsure\b|\buncertain\b|\bunclear\b|"
    r"\bno idea\b|\bcannot be determined\b|\binsufficient\b",
    _I,
)
_CONCLUSION = re.compile(
    r"(?:therefore|thus|so|hence|in conclusion|in summary|overall|finally|consequently)\b", _I
)

# Explicit statements: the label or option text must follow the match at once.
_VERB = (
    r"\b(?:is|would[ \t]+be|should[ \t]+be|must[ \t]+be|will[ \t]+be|seems[ \t]+to[ \t]+be|"
    r"appears[ \t]+to[ \t]+be)\b(?:[ \t]+(?:likely|probably|clearly|definitely))?[ \t]*[:=\-]?"
)
_TAIL = r"\s*(?:(?:option|choice|letter)[ \t]+)?(?:\\boxed[ \t]*\{[ \t]*)?"
_EXPLICIT: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("boxed", re.compile(r"\\boxed[ \t]*\{[ \t]*")),
    # "The answer is (C)", "Answer: c", "### Answer\nC", "The answer to this question is C";
    # "answer" alone must be followed by a colon, a line break or a bracket ("Answer (B)").
    ("answer_is", re.compile(
        r"\banswer(?:[ \t]+(?:choice|option)\b)?(?:[ \t]+(?:to|for|in|here)\b[^.\n:]{0,40}?)?"
        rf"(?:[ \t]*{_VERB}|[ \t]*[:=\-]|[ \t]*(?=\n)|[ \t]*(?=[\(\[])){_TAIL}", _I)),
    # "The correct option is A", "The most likely diagnosis is (C)", "My choice is B"
    ("best_is", re.compile(
        r"\b(?:(?:correct|right|best|final|appropriate|most[ \t]+(?:likely|appropriate|probable|"
        r"accurate|common|effective|important))[ \t]+(?:[\w'-]+[ \t]+){0,6}?|"
        rf"my[ \t]+(?:choice|pick|selection|guess)[ \t]+){_VERB}{_TAIL}", _I)),
    # "I would choose B", "I'd go with C"
    ("chosen", re.compile(
        r"\b(?:i|we)(?:[ \t]+would|[ \t]+will|'d|'ll)?[ \t]+(?:choose|select|pick|go[ \t]+with|"
        r"opt[ \t]+for)[ \t]+(?:(?:option|choice|answer)[ \t]+)?", _I)),
    # "答案：C" (full-width colon after NFKC), "答案是C", "正确答案为C", "选C"
    ("zh", re.compile(r"答案[ \t]*(?:是|为|应为|应该是)?[ \t]*:?[ \t]*(?:选项)?[ \t]*|选择?[ \t]*")),
)


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    index: int  # an option index, CONFLICT or AMBIGUOUS
    kind: str


@functools.lru_cache(maxsize=256)
def _token_re(labels: tuple[str, ...]) -> re.Pattern[str]:
    """A label, bracketed or bare; a bare one may not run on into a word ("B-cell", "B12")."""
    alt = "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
    return re.compile(rf"(?P<open>[\(\[][ \t]*)?(?P<lab>{alt})(?(open)[ \t]*[\)\]]|(?![A-Za-z0-9'\-]))", _I)


@functools.lru_cache(maxsize=256)
def _mention_re(labels: tuple[str, ...]) -> re.Pattern[str]:
    token = _token_re(labels).pattern
    return re.compile(rf"(?<![A-Za-z0-9'\-\\.])(?P<pre>(?:option|choice|letter)[ \t]+)?{token}", _I)


@functools.lru_cache(maxsize=256)
def _label_first_re(labels: tuple[str, ...]) -> re.Pattern[str]:
    """The label first: "C is correct", "Option (B) is the best answer", "A is the answer"."""
    token = _token_re(labels).pattern
    return re.compile(
        rf"(?<![A-Za-z0-9'\-\\.])(?P<pre>(?:option|choice)[ \t]+)?{token}[ \t]+(?:is|would[ \t]+be|seems)"
        r"[ \t]+(?:the[ \t]+)?(?:(?:correct|right|best|most[ \t]+(?:likely|appropriate)|final)\b|answer\b)",
        _I,
    )


@functools.lru_cache(maxsize=1024)
def _option_re(choice: str) -> re.Pattern[str] | None:
    """An option's text whatever its case and punctuation: "anti-acetylcholine" also matches
    "anti acetylcholine", "‘straight cath’" matches "'straight cath'"."""
    words = re.findall(r"[^\W_]+", choice)
    if not words:
        return None
    return re.compile(r"(?<![^\W_])" + r"[\W_]*".join(re.escape(w) for w in words) + r"(?![^\W_])", _I)


def _squash(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


class _Question:
    """The labels and option texts of one question, and how to find them in a text."""

    def __init__(self, labels: tuple[str, ...], choices: tuple[str, ...]):
        self.lower = tuple(lab.lower() for lab in labels)
        self.lettered = all(len(lab) == 1 and lab.isalpha() for lab in labels)
        self.token = _token_re(labels)
        self.mention = _mention_re(labels)
        self.label_first = _label_first_re(labels)
        # An option whose text is its label (yes/no/maybe) is matched as a label only.
        self.options: list[tuple[int, re.Pattern[str]]] = []
        for i, choice in enumerate(choices):
            pattern = _option_re(choice)
            if pattern is not None and (i >= len(labels) or _squash(choice) != _squash(labels[i])):
                self.options.append((i, pattern))

    def index(self, label: str) -> int:
        return self.lower.index(label.lower())

    def option_at(self, s: str, pos: int) -> tuple[int, int] | None:
        """The option whose text starts at `pos` (the longest if several match), and its end."""
        best: tuple[int, int] | None = None
        for i, pattern in self.options:
            m = pattern.match(s, pos)
            if m and (best is None or m.end() > best[1]):
                best = (i, m.end())
        return best

    def option_after(self, s: str, end: int, bracketed: bool = False) -> tuple[int, int] | None:
        """The option whose text follows a label that ends at `end` ("C) Ibuprofen"), and its end."""
        sep = (_BRACKET_SEPARATOR if bracketed else _SEPARATOR).match(s, end)
        return self.option_at(s, sep.end() if sep else end)


def _clean(text: str) -> str:
    """Undo markdown and LaTeX wrapping, full-width forms (NFKC) and typographic quotes."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    previous = None
    while previous != text:
        previous = text
        text = re.sub(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)[ \t]*\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\[()\[\]]|\$", " ", text)
    text = re.sub(r"([\"'])([^\W_]{1,8})\1", r"\2", text)  # a quoted label: 'B', "yes"
    text = re.sub(r"[*_`]+", "", text)
    text = re.sub(r"^[ \t]*(?:#+|>+|[-•][ \t])[ \t]*", "", text, flags=re.MULTILINE)
    return text.strip()


def _named(s: str, start: int) -> bool:
    return _NAME_BEFORE.search(s, max(0, start - _LOOKBACK), start) is not None


def _bare_ok(s: str, m: re.Match[str], q: _Question, mode: Mode) -> bool:
    """Whether an unbracketed label with no option text after it is a label here, not an
    article, pronoun or name ("a patient", "A 45-year-old", "E. coli", "vitamin A", "no evidence")."""
    lab, end = m.group("lab"), m.end()
    alone = _STANDALONE.match(s, end) is not None
    if mode == "explicit":  # "the answer is a combination", "The answer is A patient-centred ..."
        return alone or not (q.lettered and (lab.islower() or lab in _WORD_LETTERS))
    if q.lettered:
        if lab.islower() and mode == "running":
            return False
        if lab.isupper() and _GENUS.match(s, end):
            return False
        if mode == "running" and _named(s, m.start()):
            return False
    return alone


def _resolve(s: str, m: re.Match[str], q: _Question, mode: Mode) -> int | None:
    """The option a matched label token names, CONFLICT, AMBIGUOUS, or None if not a label."""
    idx, end = q.index(m.group("lab")), m.end()
    following = q.option_after(s, end, bracketed=bool(m.group("open")))
    if following is not None and following[0] != idx:
        return CONFLICT
    bare = not m.group("open") and not m.groupdict().get("pre")
    if bare and following is None and not _bare_ok(s, m, q, mode):
        return None
    # A second label may come after this one's own text too: "C. Aspirin, or D. Naproxen".
    joined = _JOINER.match(s, following[1] if following else end)
    other = q.token.match(s, joined.end()) if joined else None
    # "B and D are correct" joins two letters; "Yes, no doubt" does not join two answers.
    other_mode: Mode = "explicit" if q.lettered else "lead"
    if other and q.index(other.group("lab")) != idx and _resolve(s, other, q, other_mode) is not None:
        return AMBIGUOUS
    return idx


def _explicit_hits(s: str, q: _Question) -> list[_Hit]:
    hits: list[_Hit] = []
    for kind, pattern in _EXPLICIT:
        for m in pattern.finditer(s):
            token = q.token.match(s, m.end())
            idx = _resolve(s, token, q, "explicit") if token else None
            if token and idx is not None:
                hits.append(_Hit(m.start(), token.end(), idx, kind))
                continue
            option = q.option_at(s, m.end())
            if option is not None:
                hits.append(_Hit(m.start(), option[1], option[0], kind))
    for m in q.label_first.finditer(s):
        if not m.group("open") and not m.group("pre") and _named(s, m.start()):
            continue  # "vitamin A is the most likely deficiency"
        window = max(0, m.start() - _LOOKBACK)
        before = _JOINED_BEFORE.search(s, window, m.start())
        joined = before is not None and re.search(rf"(?:{q.token.pattern})[ \t]*$", s[window : before.start()], _I)
        hits.append(_Hit(m.start(), m.end(), AMBIGUOUS if joined else q.index(m.group("lab")), "label_first"))
    return sorted(hits, key=lambda h: (h.start, h.end))


def _line_leads(s: str, q: _Question) -> list[_Hit]:
    """Labels that open a line: "C", "(B)", "C) Ibuprofen", "Yes, but ...", "a)"."""
    hits = []
    for line in re.finditer(r"^[ \t]*", s, re.MULTILINE):
        m = q.token.match(s, line.end())
        idx = _resolve(s, m, q, "lead") if m else None
        if m and idx is not None and not _NEG_AFTER.match(s, m.end()):  # not "C is incorrect"
            hits.append(_Hit(m.start(), m.end(), idx, "leading_label"))
    return hits


def _negated(s: str, start: int, end: int) -> bool:
    return bool(_NEG_BEFORE.search(s, max(0, start - _LOOKBACK), start) or _NEG_AFTER.match(s, end))


def _mentions(s: str, q: _Question) -> Extraction:
    """One label or option text named in running text; negated ones ("not B") do not count."""
    spans = [(m.start(), m.end(), i) for i, pattern in q.options for m in pattern.finditer(s)]
    found: set[int] = set()
    # A longer option containing a shorter one ("Aspirin plus clopidogrel", "Aspirin") wins.
    for start, end, i in spans:
        inside = any(a <= start and end <= b and b - a > end - start for a, b, _ in spans)
        if not inside and not _negated(s, start, end):
            found.add(i)
    from_label = False
    for m in q.mention.finditer(s):
        if any(a <= m.start("lab") < b for a, b, _ in spans):
            continue  # a letter inside an option's text ("Hepatitis B vaccination")
        idx = _resolve(s, m, q, "running")
        if idx is None or _negated(s, m.start(), m.end()):
            continue
        if idx < 0:
            return Extraction(None, "conflict" if idx == CONFLICT else "ambiguous_labels")
        found.add(idx)
        from_label = True
    if len(found) == 1:
        return Extraction(found.pop(), "label_mention" if from_label else "option_text")
    if found:
        return Extraction(None, "ambiguous_labels" if from_label else "ambiguous_options")
    if _UNSURE.search(s):
        return Extraction(None, "unsure")
    return Extraction(None, "no_label")


def _agree(hits: Sequence[_Hit]) -> int | str:
    """The option every hit names, or why there is none."""
    indices = {h.index for h in hits}
    if CONFLICT in indices:
        return "conflict"
    if AMBIGUOUS in indices:
        return "ambiguous_labels"
    return indices.pop() if len(indices) == 1 else "disagree"


@EXTRACTORS.register("choice")
def extract_choice(text: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> Extraction:
    """The one answer a short reply commits to; unsure when two commitments differ."""
    s = _clean(text)
    if not s:
        return Extraction(None, "empty")
    q = _Question(labels, choices)
    explicit = _explicit_hits(s, q)
    leads = _line_leads(s, q)
    if explicit or leads:
        agreed = _agree([*leads, *explicit])
        if isinstance(agreed, int):
            return Extraction(agreed, f"explicit:{explicit[-1].kind}" if explicit else "leading_label")
        if agreed != "disagree":
            return Extraction(None, agreed)
        if len({h.index for h in explicit}) > 1:
            return Extraction(None, "ambiguous_explicit")
        # An option list ("A. ...\nB. ..."), or a first answer then a different stated one.
        return Extraction(None, "explicit_vs_leading" if explicit else "ambiguous_labels")
    if _REFUSAL.search(s):
        return Extraction(None, "refusal")
    return _mentions(s, q)


def _reasoning_between(s: str, end: int, start: int) -> bool:
    """Whether a whole sentence of reasoning separates two answer statements."""
    pieces = re.split(r"[.!?\n]+", s[end:start])
    return any(len(re.findall(r"\w+", p)) >= 3 for p in pieces[1:-1])


def _final_line(s: str, q: _Question) -> _Hit | None:
    """A short last line that opens with a label ("C", "C) Aspirin"), unless it ends an option
    list: the line before it opens with a label too."""
    lines = list(re.finditer(r"[^\n]*\S[^\n]*", s))
    last = lines[-1]
    if len(last.group().split()) > 12:
        return None
    leads = _line_leads(s, q)
    hit = next((h for h in leads if h.start >= last.start()), None)
    if hit is None:
        return None
    if len(lines) > 1 and any(lines[-2].start() <= h.start < lines[-2].end() for h in leads):
        return None
    return _Hit(hit.start, hit.end, hit.index, "final_line")


@EXTRACTORS.register("last_answer")
def extract_last_answer(text: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> Extraction:
    """The final answer of a reasoning text: its closing explicit statement wins."""
    s = _clean(text)
    if not s:
        return Extraction(None, "empty")
    q = _Question(labels, choices)
    hits = _explicit_hits(s, q)
    line = _final_line(s, q)
    if line is not None and (not hits or line.start >= hits[-1].start):
        hits.append(line)
    if hits:
        # The closing statement: the last hit and those before it with no reasoning between.
        block = [hits[-1]]
        for hit in reversed(hits[:-1]):
            if hit.end <= block[-1].start and _reasoning_between(s, hit.end, block[-1].start):
                break
            block.append(hit)
        agreed = _agree(block)
        if isinstance(agreed, int):
            return Extraction(agreed, f"final:{hits[-1].kind}")
        return Extraction(None, "final_disagree" if agreed == "disagree" else agreed)
    if _REFUSAL.search(s):
        return Extraction(None, "refusal")
    sentences = [p.strip() for p in re.split(r"(?<=[.!?])\s+|\n+", s) if p.strip()]
    if _CONCLUSION.match(sentences[-1]):
        found = _mentions(sentences[-1], q)
        if found.index is not None:
            return Extraction(found.index, f"conclusion:{found.method}")
    if "\n" not in s:
        return extract_choice(s, labels, choices)  # one line: a short reply, no reasoning to skip
    leads = _line_leads(s, q)
    if len(leads) == 1 and leads[0].start == 0:  # the answer first, then an explanation
        agreed = _agree(leads)
        return Extraction(agreed, "leading_label") if isinstance(agreed, int) else Extraction(None, agreed)
    return Extraction(None, "unsure" if _UNSURE.search(s) else "no_final_answer")


def get_extractor(name: str | None = None) -> Extractor:
    """The extractor a task or protocol names; the default ("choice") when None."""
    return EXTRACTORS.get(name or DEFAULT_EXTRACTOR)
