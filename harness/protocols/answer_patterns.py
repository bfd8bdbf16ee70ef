"""The vocabulary of answers, for the extractors in harness.protocols.extract: where a label
token may stand and how much evidence it needs there, the phrases that introduce, negate, hedge
or refuse an answer, how an option's text is matched near-verbatim (articles, plurals,
abbreviations), and a question's labels and options prepared once (_Question)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Extraction:
    """An extractor's answer: the option index, or None with the reason in `method`."""

    index: int | None
    method: str


# Where a label token sits decides how much evidence it needs: after "the answer is" almost
# none; opening a line, it must stand alone ("C)", not "C diff"); in running text, more still.
Mode = Literal["explicit", "lead", "running"]
CONFLICT = -1  # a label followed by another option's text: "C) Ibuprofen" when C is Aspirin
AMBIGUOUS = -2  # two labels joined: "A or B", "A and C", "yes/no"
OUTSIDE = -3  # an answer that is no option: "The answer is (E)" of four, "Answer: 7"

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
_JOINER = re.compile(r"[ \t]*(?:\.{2,}|…)?[ \t]*(?:(?:,|/|&|\bor\b|\band\b|\bnor\b)[ \t]*)+"
                     r"(?:(?:maybe|perhaps|possibly|probably)[ \t]+)?(?:(?:option|choice)[ \t]+)?", _I)
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
        r"\b(?:i|we)(?:(?:[ \t]+would|[ \t]+will|'d|'ll)?[ \t]+(?:choose|select|pick|go[ \t]+with|opt[ \t]+for)|"
        r"(?:[ \t]+would|'d)[ \t]+say)[ \t]+(?:(?:option|choice|answer)[ \t]+)?", _I)),
    # "答案：C" (full-width colon after NFKC), "答案是C", "正确答案为C", "选C"
    ("zh", re.compile(r"答案[ \t]*(?:是|为|應為|应为|应该是)?[ \t]*:?[ \t]*(?:选项|選項)?[ \t]*|选择?[ \t]*")),
    # Japanese "正解はB", "答え：C"; Korean "정답은 B"
    ("ja_ko", re.compile(r"(?:正解|答え|解答|정답|답)[ \t]*(?:は|:|=|은|는|:)[ \t]*(?:選択肢|선택지)?[ \t]*")),
    # "La respuesta correcta es la B", "La bonne réponse est C", "Die richtige Antwort ist B",
    # "A resposta é D", "La risposta è A", "Antwort: B"
    ("intl", re.compile(
        r"\b(?:respuesta|r[ée]ponse|antwort|resposta|risposta)(?:[ \t]+(?:correcta|correcte|correta|"
        r"corretta|richtige|final|finale|exacte))?(?:[ \t]*[:=]|[ \t]+(?:es|est|ist|é|è|lautet|sería|serait|"
        r"wäre|seria|sarebbe)\b)[ \t]*(?:(?:la|le|l'|a|die)[ \t]+)?(?:(?:opción|opcion|option|opção|opzione|"
        r"alternativa)[ \t]+)?", _I)),
    # A conclusion naming a label: "... so D", "Therefore, it's (B)", "Hence I'd pick C."
    ("conclusion", re.compile(
        r"\b(?:so|therefore|thus|hence|consequently)[ \t]*,?[ \t]+(?:it(?:'s|[ \t]+is|[ \t]+must[ \t]+be)"
        r"[ \t]+|(?:i|we)(?:'d|'ll|[ \t]+will|[ \t]+would)?[ \t]+(?:choose|pick|go[ \t]+with|select)[ \t]+)?"
        r"(?:(?:option|choice)[ \t]+)?(?=\(?[A-Za-z]\)?[ \t]*(?:$|[.!,;:\n]))", _I)),
)
# An option number where an explicit statement names its answer: "Answer: 4", "答案是3".
_NUMBER = re.compile(r"(?:(?:number|no\.?|#)[ \t]*)?[\(\[]?[ \t]*(?P<n>[1-9])[ \t]*[\)\]]?(?![\d])(?![.,]\d)"
                     r"(?=[ \t]*(?:$|[.!,;:\n\)]|(?:or|and|because|since)\b))", _I)
# A letter outside the options where an explicit statement names its answer: "The answer is (F)".
_OUTSIDE = re.compile(r"(?:\([ \t]*(?P<b>[A-Za-z])[ \t]*\)|(?P<l>[A-Z]))(?=[ \t]*(?:$|[.!,;:\n]))")
# Ordinals and option numbers, rewritten to "option X" before extraction: "the third option",
# "option 3", "第三个选项", "选项3", "3番目の選択肢", "la tercera opción", "die dritte Option".
_ORDINALS: dict[str, int] = {}
for _n, _words in enumerate((
    "first 1st primera primero premi[eè]re premier erste[nrs]? primeira prima primo",
    "second 2nd segunda segundo deuxi[eè]me seconde? zweite[nrs]? seconda secondo",
    "third 3rd tercera tercero troisi[eè]me dritte[nrs]? terceira terza terzo",
    "fourth 4th cuarta cuarto quatri[eè]me vierte[nrs]? quarta quarto",
    "fifth 5th quinta quinto cinqui[eè]me f[üu]nfte[nrs]? quinta quinto",
    "sixth 6th sexta sexto sixi[eè]me sechste[nrs]? sesta sesto",
)):
    for _w in _words.split():
        _ORDINALS.setdefault(_w, _n)
_CJK_NUMBERS = {c: i for i, c in enumerate("一二三四五六七八九")}
_ORDINAL_WORD = re.compile(
    r"(?:\bthe[ \t]+(?=(?:first|second|third|fourth|fifth|sixth|last|[1-6](?:st|nd|rd|th))\b)|"
    r"\b(?:(?:la|le|l'|die|der|das|a|o|il)[ \t]*)?"
    r"(?!(?:first|second|third|fourth|fifth|sixth|last|[1-6](?:st|nd|rd|th))\b))"
    rf"(?P<ord>{'|'.join(_ORDINALS)}|last)[ \t]+(?:option|choice|answer|alternative|one|opci[oó]n|op[cç][aã]o|"
    r"opzione|alternativa|r[ée]ponse|respuesta|resposta|risposta|antwort(?:m[öo]glichkeit)?)\b"
    r"(?![ \t]+(?:of|for|in|to|treatment|therapy|drug|agent|line|management)\b)", _I)
_OPTION_NUMBER = re.compile(r"\b(?P<w>option|choice|opci[oó]n|op[cç][aã]o|opzione|alternativa)[ \t]*"
                            r"(?:number|no\.?|n[º°]|#)?[ \t]*(?P<n>[1-9])(?![\d])(?![.,]\d)", _I)
_CJK_ORDINAL = re.compile(r"第[ \t]*(?P<n>[1-9一二三四五六七八九])[ \t]*(?:个|個|项|項|の)?[ \t]*"
                          r"(?:选项|選項|选择|選択肢|项|項|答案)|"
                          r"(?:选项|選項|選択肢)[ \t]*(?P<m>[1-9一二三四五六七八九])(?![\d])|"
                          r"(?P<k>[1-9])[ \t]*番目?(?:の選択肢)?|(?P<j>[一二三四五六七八九])[ \t]*番目(?:の選択肢)?")


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
    return re.compile(rf"(?<![A-Za-z0-9'\-\\.])(?<![A-Za-z0-9]/)(?P<pre>(?:option|choice|letter)[ \t]+)?{token}", _I)


@functools.lru_cache(maxsize=256)
def _label_first_re(labels: tuple[str, ...]) -> re.Pattern[str]:
    """The label first: "C is correct", "Option (B) is the best answer", "A is the answer"."""
    token = _token_re(labels).pattern
    return re.compile(
        rf"(?<![A-Za-z0-9'\-\\.])(?P<pre>(?:option|choice)[ \t]+)?{token}(?:[ \t]+(?:is|would[ \t]+be|seems)"
        r"[ \t]+(?:the[ \t]+)?(?:(?:correct|right|best|most[ \t]+(?:likely|appropriate)|final)\b|answer\b)|"
        r"[ \t]*(?:是|为|為|が)[ \t]*(?:正确|正確|最佳|最合适|对的|正解))",  # "选项C是正确的", "Cが正解"
        _I,
    )


# Abbreviations an answer may use for an option's words, both ways ("IV" for "intravenous").
_ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "iv": ("intravenous", "intravenously"), "im": ("intramuscular", "intramuscularly"),
    "po": ("oral", "orally", "by mouth"), "sc": ("subcutaneous", "subcutaneously"),
    "sq": ("subcutaneous", "subcutaneously"), "mi": ("myocardial infarction",),
    "ct": ("computed tomography",), "mri": ("magnetic resonance imaging",),
    "ecg": ("electrocardiogram", "electrocardiography", "ekg"), "ekg": ("electrocardiogram", "ecg"),
    "copd": ("chronic obstructive pulmonary disease",), "dvt": ("deep vein thrombosis", "deep venous thrombosis"),
    "pe": ("pulmonary embolism",), "uti": ("urinary tract infection",), "gerd": ("gastroesophageal reflux disease",),
    "nsaid": ("nonsteroidal anti inflammatory drug", "non steroidal anti inflammatory drug"),
    "ssri": ("selective serotonin reuptake inhibitor",), "ace": ("angiotensin converting enzyme",),
    "tb": ("tuberculosis",), "hiv": ("human immunodeficiency virus",), "sle": ("systemic lupus erythematosus",),
    "ra": ("rheumatoid arthritis",), "ms": ("multiple sclerosis",), "dka": ("diabetic ketoacidosis",),
    "ards": ("acute respiratory distress syndrome",), "cbc": ("complete blood count",),
    "ivig": ("intravenous immunoglobulin", "intravenous immune globulin"), "tpa": ("tissue plasminogen activator",),
    "cabg": ("coronary artery bypass graft", "coronary artery bypass grafting"),
    "ercp": ("endoscopic retrograde cholangiopancreatography",), "lp": ("lumbar puncture",),
}
_SPECIES = re.compile(r"[a-z]{3,}(?:ae|ii|i|us|um|is|es|ile|oli|ori|ens|ella|occus|ans|ax|um)\b")
_ARTICLES = frozenset({"a", "an", "the"})
_SEP = r"[\W_]*"


def _phrase_re(phrase: str) -> str:
    return _SEP.join(_word_re(w) for w in phrase.split())


def _word_re(word: str) -> str:
    """A word of an option, also in its singular or plural form ("fluid", "fluids", "arteries")."""
    low = word.lower()
    if not low.isalpha() or len(low) < 4:
        return re.escape(word)
    if low.endswith("ies"):
        return re.escape(low[:-3]) + "(?:y|ies)"
    if low.endswith("y"):
        return re.escape(low[:-1]) + "(?:y|ies)"
    if low.endswith(("ses", "xes", "ches", "shes")):
        return re.escape(low[:-2]) + "(?:es)?"
    if low.endswith("s") and not low.endswith(("ss", "us", "is")):
        return re.escape(low[:-1]) + "s?"
    return re.escape(low) + "(?:s|es)?"


_EXPANSIONS = sorted(
    ((tuple(exp.split()), abbr) for abbr, exps in _ABBREVIATIONS.items() for exp in exps if " " in exp),
    key=lambda pair: -len(pair[0]),
)


@functools.lru_cache(maxsize=1024)
def _option_re(choice: str) -> re.Pattern[str] | None:
    """An option's text whatever its case and punctuation ("anti-acetylcholine" also matches
    "anti acetylcholine", "‘straight cath’" matches "'straight cath'"), near-verbatim: articles
    may come or go, a noun may be singular or plural, and a common abbreviation may stand for its
    words or the words for it ("IV fluids" for "Intravenous fluids")."""
    words = re.findall(r"[^\W_]+", choice)
    if not words:
        return None
    low = [w.lower() for w in words]
    pieces: list[str] = []
    i = 0
    while i < len(words):
        for exp, abbr in _EXPANSIONS:  # "myocardial infarction" -> also "MI"
            if tuple(low[i : i + len(exp)]) == exp:
                pieces.append(f"(?:{_phrase_re(' '.join(exp))}|{abbr})")
                i += len(exp)
                break
        else:
            w = low[i]
            # an article, not a name's letter: "a", "the", "The ...", but not "Hepatitis A"
            if w in _ARTICLES and (words[i].islower() or (i == 0 and len(words) > 1 and w != "a")):
                i += 1
                continue
            alts = [_word_re(words[i])]
            if (len(w) >= 5 and words[i][0].isupper() and i + 1 < len(words) and words[i + 1].islower()
                    and _SPECIES.fullmatch(words[i + 1])):
                alts.append(re.escape(words[i][0]) + r"\.")  # "C. difficile" for "Clostridioides difficile"
            alts += [_phrase_re(e) for e in _ABBREVIATIONS.get(w, ())]
            alts += [a for a, exps in _ABBREVIATIONS.items() if w in exps]
            pieces.append(f"(?:{'|'.join(alts)})" if len(alts) > 1 else alts[0])
            i += 1
    if not pieces:
        return None
    article = r"(?:(?:a|an|the)[\W_]+)?"
    body = _SEP.join(article + piece for piece in pieces) if len(pieces) > 1 else pieces[0]
    return re.compile(r"(?<![^\W_])" + body + r"(?![^\W_])", _I)


def _squash(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


class _Question:
    """The labels and option texts of one question, and how to find them in a text."""

    def __init__(self, labels: tuple[str, ...], choices: tuple[str, ...]):
        self.labels = labels
        self.choices = choices
        self.lower = tuple(lab.lower() for lab in labels)
        self.lettered = all(len(lab) == 1 and lab.isalpha() for lab in labels)
        self.token = _token_re(labels)
        self.mention = _mention_re(labels)
        # "Answer: 4" names the fourth option unless the labels or an option's text hold numbers
        self.numbers_ok = not any(re.search(r"\d", x) for x in (*labels, *choices))
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


