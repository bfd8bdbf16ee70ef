"""Answer forms read before the statement rules of harness.protocols.extract: a JSON answer key
(`"final_answer": "C"`), retractions ("wait, no", "actually, B": what follows the last one
decides), and one option marked right in a list or table ("| C | ✓ |", "[x] B")."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from harness.protocols.answer_patterns import _I, Extraction, _Question

# Retractions: what follows the last one decides ("The answer is A. Wait, no: B"); a strong one
# with no answer after it leaves the text unsure. "Actually" counts only when an answer follows.
_RETRACT = re.compile(
    r"(?:^|(?<=[.!?,;:(\n—–-])|(?<=[.!?,;:(\n—–-][ \t]))[ \t]*(?:wait|hold[ \t]+on)\b(?=[ \t]*(?:[,.!:;—–-]|no\b|$))|"
    r"\bscratch[ \t]+that\b|\bno,?[ \t]+wait\b|"
    r"\bon[ \t]+(?:second[ \t]+thought|reflection)\b|\bcorrection[ \t]*:|\blet[ \t]+me[ \t]+(?:reconsider|rethink|"
    r"correct[ \t]+(?:that|myself))\b|\bi[ \t]+take[ \t]+(?:that|it)[ \t]+back\b|\bi[ \t]+was[ \t]+wrong\b|"
    r"\bi[ \t]+made[ \t]+a[ \t]+mistake\b|\bsorry,?[ \t]+(?:i[ \t]+meant|no)\b|\b(?:hmm+|oh),?[ \t]+no\b|"
    r"\b(?:no,?[ \t]+)?make[ \t]+(?:that|it)\b(?=[ \t]+(?:option[ \t]+)?\(?[A-Za-z]\)?[ \t]*(?:$|[.!,;]))|"
    r"\bi[ \t]+meant\b|不对|等等|更正|いや|訂正",
    _I | re.MULTILINE,
)
_ACTUALLY = re.compile(r"(?:^|(?<=[.!?,;:\n]))[ \t]*(?:actually|i[ \t]+mean|or[ \t]+rather)\b", _I | re.MULTILINE)
_RETRACT_FILLER = re.compile(r"^[ \t,.:;!?—–\-]*(?:(?:no|nope|not[ \t]+that)\b[ \t,.:;!?—–\-]*)?", _I)
_FIRM = ("explicit", "leading_label", "final:", "marked", "json")

Core = Callable[[str, _Question], Extraction]


def retraction(s: str, q: _Question, core: Core) -> Extraction | None:
    """The answer after the last retraction that decides, or unsure after a strong one."""
    spans = [(m.start(), m.end()) for _, pattern in q.options for m in pattern.finditer(s)]
    markers = [(m, True) for m in _RETRACT.finditer(s)] + [(m, False) for m in _ACTUALLY.finditer(s)]
    markers = [(m, strong) for m, strong in markers if not any(a <= m.start() < b for a, b in spans)]
    for m, strong in sorted(markers, key=lambda pair: -pair[0].start()):
        tail = s[m.end():]
        filler = _RETRACT_FILLER.match(tail)
        assert filler is not None
        tail = tail[filler.end():]
        if "no" in q.lower and re.search(r"\bno\b", filler.group(), _I) and not tail.strip(" \t.!"):
            return Extraction(None, "ambiguous_retraction")  # "Actually, no.": a retraction or the label "no"
        got = core(tail, q) if tail.strip() else Extraction(None, "empty")
        if got.index is not None and (strong or got.method.startswith(_FIRM)):
            return Extraction(got.index, f"corrected:{got.method}")
        if strong:
            return Extraction(None, "retracted")
    return None


# JSON with an answer key, read before any other rule: {"reasoning": "...", "final_answer": "C"}
_JSON_KEY = re.compile(
    r'"(?P<key>(?:final|selected|correct|chosen|best)[ _\-]?(?:answer|option|choice)|answer|final|prediction)"'
    r'[ \t]*:[ \t]*'
    r'(?P<val>"(?:[^"\\]|\\.)*"|null|\[[^\]]*\]|-?\d+|true|false)',
    _I,
)


def json_answer(text: str, q: _Question, core: Core) -> Extraction | None:
    """The answer of a JSON answer key; its value is read by `core` (a label, an option text)."""
    found = [m for m in _JSON_KEY.finditer(text)]
    if not found:
        return None
    # a final-answer key beats a plain one; among equals the last (after the reasoning) wins
    m = max(found, key=lambda m: (bool(re.match(r"(?:final|selected|correct|chosen)", m.group("key"), _I)), m.start()))
    try:
        value = json.loads(m.group("val"))
    except ValueError:
        return Extraction(None, "json_unreadable")
    if isinstance(value, list):
        if len(value) != 1:
            return Extraction(None, "json_ambiguous" if value else "json_no_answer")
        value = value[0]
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        return Extraction(None, "json_no_answer")
    if isinstance(value, int):
        value = str(value)
    got = core(str(value), q)
    if got.index is None and q.numbers_ok and re.fullmatch(r"[ \t]*[1-9][ \t]*", str(value)):
        n = int(value)
        return Extraction(n - 1, "json:number") if n <= len(q.lower) else Extraction(None, "outside_options")
    if got.index is None:
        return Extraction(None, f"json_{got.method}")
    return Extraction(got.index, f"json:{got.method}")


# Marked options, one a line (a Markdown table row, a bullet, a checkbox): "| B | Acetaminophen | ✓ |",
# "- [x] C", "A. Ibuprofen ✗", "D: incorrect". One option marked right (and no other) is the answer.
_POS_MARK = re.compile(r"[✓✔☑✅]|\[[xX✓✔]\]")
_NEG_MARK = re.compile(r"[✗✘❌☒✕]|\[[ \t]\]")
_VERDICT = re.compile(
    r"(?:(?P<neg>incorrect|not[ \t]+correct|wrong|false|no|unlikely|not[ \t]+the[ \t]+answer|eliminated|ruled[ \t]+out|"
    r"excluded)|(?P<pos>correct|right|true|yes|the[ \t]+answer|correct[ \t]+answer|best[ \t]+answer|selected|chosen|"
    r"most[ \t]+likely))"
    r"[ \t]*[.!)]*[ \t]*$",
    _I,
)


def marked_option(s: str, q: _Question) -> tuple[int | str | None, set[int]]:
    """The one option marked right in a list or table, a reason if none or several are, and the
    starts of the marked lines (their labels open no answer line)."""
    rows: list[tuple[int, int, int]] = []  # (line start, option, +1 right / -1 wrong)
    for line in re.finditer(r"[^\n]+", s):
        text, base = line.group(), line.start()
        if re.fullmatch(r"[\s|:+\-]*", text) or text.count("|") == 1:
            continue
        cells = [c.strip() for c in text.strip().strip("|").split("|")] if "|" in text else [text.strip()]
        verdict = 0
        option: int | None = None
        for cell in cells:
            box = re.match(r"\[([ \txX✓✔])\][ \t]*", cell)
            if box:
                verdict = -1 if box.group(1).isspace() else 1
                cell = cell[box.end():]
            if option is None:
                m = q.token.match(cell)
                after = cell[m.end():] if m else ""
                if m and re.match(r"[ \t]*(?:$|[.):\]]|[ \t]+\S)", after) and not after.startswith("-"):
                    following = q.option_after(cell, m.end(), bracketed=bool(m.group("open")))
                    idx = q.index(m.group("lab"))
                    if following is not None and following[0] != idx:
                        break  # a label with another option's text: no mark of this line counts
                    option = idx
                    rest = cell[(following[1] if following else m.end()):]
                else:
                    opt = q.option_at(cell, 0)
                    if opt is None:
                        continue
                    option, rest = opt[0], cell[opt[1]:]
                if len(cells) == 1:  # a bullet: the verdict closes it, "- A. Ibuprofen: incorrect"
                    tail = re.split(r"[—–:(,]|[ \t]-[ \t]", rest)[-1] if re.search(r"[—–:(,]|[ \t]-[ \t]", rest) else ""
                    v = _VERDICT.fullmatch(tail.strip().rstrip(".)")) if tail.strip() else None
                    if v:
                        verdict = verdict or (1 if v.group("pos") else -1)
                continue
            word = _VERDICT.fullmatch(cell)
            if verdict == 0 and word:
                verdict = 1 if word.group("pos") else -1
            elif verdict == 0 and re.fullmatch(r"[xX]", cell):
                verdict = 1  # an X in a table's column: this row is the one chosen
        if option is None:
            continue
        if _POS_MARK.search(text) and not _NEG_MARK.search(text):
            verdict = 1
        elif _NEG_MARK.search(text) and not _POS_MARK.search(text):
            verdict = -1
        if verdict:
            rows.append((base, option, verdict))
    if not rows:
        return None, set()
    starts = {r[0] for r in rows}
    right = {r[1] for r in rows if r[2] > 0}
    if len(right) == 1:
        return right.pop(), starts
    return ("ambiguous_marks" if right else "no_marked_answer"), starts
