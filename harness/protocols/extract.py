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

- `model`: the protocol's rule (`choice` or `last_answer`), then, where it is unsure, an
  auxiliary extractor model asked in a follow-up stage (harness.protocols.model_extract).

Hand-written rules: no maintained library extracts multiple-choice answers (lm-eval and
simple-evals keep one regex per task). First a JSON answer key (`"final_answer": "C"`), or the
last retraction that decides ("wait, no", "scratch that", "actually, B": what follows it counts;
nothing after a strong one is unsure). Then, in order of confidence: explicit statements
("the answer is (C)", "\\boxed{C}", "答案是C", "正解はB", "Answer: 4"; not inside a hypothetical,
"if it were X the answer would be A"), one option marked in a table or list ("| C | ✓ |", "[x] B"),
a label opening a line ("C) Aspirin"), then a mention of exactly one label or option text in
running text, and last a short reply naming one option in other words. Before that, ordinals
and option numbers are rewritten as labels ("the third option", "第三个选项" -> "option C"); an
option's text matches near-verbatim (articles, plurals, abbreviations such as IV).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

from harness.protocols.answer_forms import Core, json_answer, marked_option, retraction
from harness.protocols.answer_patterns import (
    _CJK_NUMBERS,
    _CJK_ORDINAL,
    _CONCLUSION,
    _EXPLICIT,
    _GENUS,
    _I,
    _JOINED_BEFORE,
    _JOINER,
    _LOOKBACK,
    _NAME_BEFORE,
    _NEG_AFTER,
    _NUMBER,
    _OPTION_NUMBER,
    _ORDINAL_WORD,
    _ORDINALS,
    _OUTSIDE,
    _REFUSAL,
    _SPECIES,
    _STANDALONE,
    _UNSURE,
    _WORD_LETTERS,
    AMBIGUOUS,
    CONFLICT,
    OUTSIDE,
    Extraction,
    Mode,
    _Hit,
    _Question,
)
from harness.protocols.hedges import hypothetical, negated
from harness.protocols.option_words import near_option
from harness.registry import Registry

Extractor = Callable[[str, tuple[str, ...], tuple[str, ...]], Extraction]
EXTRACTORS: Registry[Extractor] = Registry("extractor", families=True)
DEFAULT_EXTRACTOR = "choice"

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


# A letter joined to a named one is named too: "Cluster A/B", "hepatitis B and C".
_NAME_JOINED = re.compile(_NAME_BEFORE.pattern[:-len(r"[ \t]+$")] + r"[ \t]+[A-Z](?:[ \t]*(?:/|,|&|and|or)[ \t]*[A-Z])*"
                          r"[ \t]*(?:/|,|&|and|or)[ \t]*$", _I)


def _ordinals(s: str, q: _Question) -> str:
    """Rewrite option ordinals and numbers as labels: "the third option" -> "the option C",
    "第三个选项" -> "option C"; a number past the last option is left as it is."""
    labels = q.labels

    def label(n: int) -> str | None:
        return labels[n] if 0 <= n < len(labels) else None

    def word(m: re.Match[str]) -> str:
        key = m.group("ord").lower()
        n = len(labels) - 1 if key == "last" else next(
            (i for w, i in _ORDINALS.items() if re.fullmatch(w, key)), -1)
        lab = label(n)
        return f"option {lab}" if lab else m.group()

    def number(m: re.Match[str]) -> str:
        lab = label(int(m.group("n")) - 1)
        return f"option {lab}" if lab else m.group()

    def cjk(m: re.Match[str]) -> str:
        raw = m.group("n") or m.group("m") or m.group("k") or m.group("j")
        lab = label(int(raw) - 1 if raw.isdigit() else _CJK_NUMBERS[raw])
        return f" option {lab} " if lab else m.group()

    s = _ORDINAL_WORD.sub(word, s)
    s = re.sub(r"(?:选项|選項|選択肢)[ \t]*(?=[A-Za-z](?![A-Za-z]))", " option ", s)  # "选项C" -> "option C"
    if q.numbers_ok:
        s = _OPTION_NUMBER.sub(number, s)
        s = _CJK_ORDINAL.sub(cjk, s)
    return s


def _named(s: str, start: int) -> bool:
    window = max(0, start - _LOOKBACK)
    return _NAME_BEFORE.search(s, window, start) is not None or _NAME_JOINED.search(s, window, start) is not None


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
    bare = not m.group("open") and not m.groupdict().get("pre")
    if following is not None and following[0] != idx:
        if bare and q.lettered and m.group("lab") in ("a", "A") and s[end:end + 1].isspace():
            return None  # the article: "has a pulmonary embolism", "A pulmonary embolism is likely"
        return CONFLICT
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


def _numbered(s: str, pos: int, q: _Question) -> tuple[int, int] | None:
    """An option number at `pos` ("Answer: 4"), OUTSIDE past the last option; None if there is none
    or an option's text holds a number (then "4" may be a value, not the fourth option)."""
    if not q.numbers_ok:
        return None
    m = _NUMBER.match(s, pos)
    if m is None:
        return None
    n = int(m.group("n"))
    return (n - 1 if n <= len(q.lower) else OUTSIDE), m.end()


def _explicit_hits(s: str, q: _Question) -> list[_Hit]:
    hits: list[_Hit] = []
    for kind, pattern in _EXPLICIT:
        for m in pattern.finditer(s):
            token = q.token.match(s, m.end())
            idx = _resolve(s, token, q, "explicit") if token else None
            if token and idx is not None and not (
                q.lettered and not token.group("open") and token.group("lab").isupper()
                and _GENUS.match(s, token.end()) and _SPECIES.match(s, _GENUS.match(s, token.end()).end() - 1)  # type: ignore[union-attr]
            ):  # not "The answer is C. difficile colitis"
                hits.append(_Hit(m.start(), token.end(), idx, kind))
                continue
            option = q.option_at(s, m.end())
            if option is not None:
                hits.append(_Hit(m.start(), option[1], option[0], kind))
                continue
            if kind == "conclusion":
                continue
            number = _numbered(s, m.end(), q)
            if number is not None:
                hits.append(_Hit(m.start(), number[1], number[0], f"{kind}:number"))
                continue
            outside = _OUTSIDE.match(s, m.end()) if q.lettered else None
            if outside is not None and (outside.group("b") or outside.group("l") != "I"):
                hits.append(_Hit(m.start(), outside.end(), OUTSIDE, kind))
    for m in q.label_first.finditer(s):
        if not m.group("open") and not m.group("pre") and _named(s, m.start()):
            continue  # "vitamin A is the most likely deficiency"
        window = max(0, m.start() - _LOOKBACK)
        before = _JOINED_BEFORE.search(s, window, m.start())
        joined = before is not None and re.search(rf"(?:{q.token.pattern})[ \t]*$", s[window : before.start()], _I)
        hits.append(_Hit(m.start(), m.end(), AMBIGUOUS if joined else q.index(m.group("lab")), "label_first"))
    # "If it were a child, the answer would be A ... so D": the conditional is no commitment.
    hits = [h for h in hits if not hypothetical(s, h.start, h.end)]
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


def _mentions(s: str, q: _Question) -> Extraction:
    """One label or option text named in running text; negated ones ("not B") do not count."""
    spans = [(m.start(), m.end(), i) for i, pattern in q.options for m in pattern.finditer(s)]
    found: set[int] = set()
    # A longer option containing a shorter one ("Aspirin plus clopidogrel", "Aspirin") wins.
    for start, end, i in spans:
        inside = any(a <= start and end <= b and b - a > end - start for a, b, _ in spans)
        if not inside and not negated(s, start, end) and not hypothetical(s, start, end):
            found.add(i)
    from_label = False
    for m in q.mention.finditer(s):
        if any(a <= m.start("lab") < b for a, b, _ in spans):
            continue  # a letter inside an option's text ("Hepatitis B vaccination")
        idx = _resolve(s, m, q, "running")
        if idx is None or negated(s, m.start(), m.end()) or hypothetical(s, m.start(), m.end()):
            continue
        if idx < 0:
            return Extraction(None, "conflict" if idx == CONFLICT else "ambiguous_labels")
        found.add(idx)
        from_label = True
    if len(found) == 1:
        return Extraction(found.pop(), "label_mention" if from_label else "option_text")
    if found:
        return Extraction(None, "ambiguous_labels" if from_label else "ambiguous_options")
    near = near_option(s, q) if not spans else None  # an option named exactly but negated stays so
    if near is not None:
        return Extraction(near, "near_option_text")
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
    if OUTSIDE in indices:
        return "outside_options"
    return indices.pop() if len(indices) == 1 else "disagree"


def _line_start(s: str, pos: int) -> int:
    return s.rfind("\n", 0, pos) + 1


def _choice(s: str, q: _Question) -> Extraction:
    if not s.strip():
        return Extraction(None, "empty")
    marked, marked_lines = marked_option(s, q)
    explicit = _explicit_hits(s, q)
    leads = [h for h in _line_leads(s, q) if _line_start(s, h.start) not in marked_lines]
    if isinstance(marked, int):
        agreed = _agree([*leads, *explicit]) if leads or explicit else marked
        return Extraction(marked, "marked") if agreed == marked else Extraction(None, "marked_vs_stated")
    if marked is not None and not explicit:
        return Extraction(None, marked)
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


def _structured(text: str, q: _Question, core: Core) -> tuple[str, Extraction | None]:
    """The prepared text, and the answer of a JSON key or a retraction where one decides."""
    raw = unicodedata.normalize("NFKC", text).replace("“", '"').replace("”", '"')
    got = json_answer(raw, q, lambda value, q: _choice(_ordinals(_clean(value), q), q))
    s = _ordinals(_clean(text), q)
    if got is None:
        got = retraction(s, q, core)
    return s, got


@EXTRACTORS.register("choice")
def extract_choice(text: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> Extraction:
    """The one answer a short reply commits to; unsure when two commitments differ (before a
    retraction such as "wait, no" or "actually, B", only what follows it counts)."""
    q = _Question(labels, choices)
    s, got = _structured(text, q, _choice)
    return got if got is not None else _choice(s, q)


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


def _last(s: str, q: _Question) -> Extraction:
    if not s.strip():
        return Extraction(None, "empty")
    hits = _explicit_hits(s, q)
    marked, marked_lines = marked_option(s, q)
    line = _final_line(s, q)
    if line is not None and _line_start(s, line.start) in marked_lines:
        line = None  # the last row of a marked list, not an answer line
    if marked is not None and (not hits or hits[-1].start < max(marked_lines)):
        # a marked list or table after the last statement decides (and the statement must agree)
        if isinstance(marked, int) and (not hits or hits[-1].index == marked
                                        or not _reasoning_between(s, hits[-1].end, max(marked_lines))):
            agrees = not hits or hits[-1].index == marked
            return Extraction(marked, "marked") if agrees else Extraction(None, "marked_vs_stated")
        if not isinstance(marked, int):
            return Extraction(None, marked)
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
    if "\n" not in s and (len(s.split()) <= _SHORT_REPLY or re.search(r"[.!?)\]]\s*$", s)):
        # one line: a short reply, no reasoning to skip (a long one cut off mid-sentence is unsure)
        return _choice(s, q)
    leads = _line_leads(s, q)
    if len(leads) == 1 and leads[0].start == 0:  # the answer first, then an explanation
        agreed = _agree(leads)
        return Extraction(agreed, "leading_label") if isinstance(agreed, int) else Extraction(None, agreed)
    if not re.search(r"[.!?)\]]\s*$", s) and len(s.rsplit("\n", 1)[-1].split()) > 8:
        return Extraction(None, "truncated")  # cut off mid-sentence before any answer
    return Extraction(None, "unsure" if _UNSURE.search(s) else "no_final_answer")


_SHORT_REPLY = 25  # words: a one-line reasoning text longer than this must end a sentence to be read as a reply


@EXTRACTORS.register("last_answer")
def extract_last_answer(text: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> Extraction:
    """The final answer of a reasoning text: its closing explicit statement wins (a retraction
    after it, "wait, no", leaves it unsure unless another answer follows)."""
    q = _Question(labels, choices)
    s, got = _structured(text, q, _last)
    return got if got is not None else _last(s, q)


MODEL_EXTRACTOR = "model"


@EXTRACTORS.register(MODEL_EXTRACTOR)
def extract_rule_then_model(text: str, labels: tuple[str, ...], choices: tuple[str, ...]) -> Extraction:
    """`extractor: model`: the protocol's rule-based extractor first (`choice` for generate,
    `last_answer` for reasoning); where it is unsure the protocol asks the `extractor` auxiliary
    model (harness.protocols.model_extract). Called alone, as here, it is the `choice` rule."""
    return extract_choice(text, labels, choices)


def get_extractor(name: str | None = None) -> Extractor:
    """The extractor a task or protocol names; the default ("choice") when None."""
    return EXTRACTORS.get(name or DEFAULT_EXTRACTOR)
