"""Pairwise judging in both orders, shared by model battles and calibration studies.

Every pair (x, y) is shown twice: x first, then y first. A verdict that names the same side in
both orders stands; one that flips with the order is a tie; a pair with an unscored order is
unscored (its order-stability cannot be checked). Baselines ("always first", "longer wins",
"random") are pair judges too and go through the same machinery.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from harness.scoring.intervals import MetricValue, mean_with_ci
from harness.types import Message, stable_hash
from judges.judge import Judge, Judgement, JudgeUsage, Progress
from judges.prompt import Fence

Choice = Literal["first", "second", "tie"]
Side = Literal["x", "y", "tie"]


@dataclass(frozen=True)
class PairQuery:
    """One pair to judge: `request` (the instruction or conversation) and answers x and y."""

    key: str
    request: str
    x: str
    y: str


@dataclass(frozen=True)
class Shown:
    """One presentation: the request and the two answers in display order."""

    request: str
    first: str
    second: str


@dataclass(frozen=True)
class OrderVerdict:
    choice: Choice | None  # None: unscored
    judgement: Judgement


class PairJudge(Protocol):
    name: str

    def fingerprint(self) -> str: ...

    def info(self) -> dict[str, Any]: ...

    def usage(self) -> JudgeUsage | None:
        """Request counters of a model judge; None for a scripted baseline."""
        ...

    def choose(self, shown: Sequence[Shown], progress: Progress | None = None) -> list[OrderVerdict]: ...


_VERDICT_CHOICE: dict[str, Choice] = {"A": "first", "B": "second", "tie": "tie"}


def _pair_fields(shown: Shown) -> dict[str, str]:
    fence = Fence([shown.request, shown.first, shown.second])
    return {"nonce": fence.nonce, "request": fence("REQUEST", shown.request),
            "first": fence("RESPONSE A", shown.first), "second": fence("RESPONSE B", shown.second)}


def pairwise_messages(judge: Judge, shown: Shown) -> tuple[Message, ...]:
    examples = [(_pair_fields(Shown(ex.fields["request"], ex.fields["first"], ex.fields["second"])), ex.reply)
                for ex in judge.prompt.examples]
    return judge.prompt.messages(_pair_fields(shown), examples)


class LLMPairJudge:
    """A model judge with a pairwise prompt (A = the response shown first)."""

    def __init__(self, judge: Judge, name: str | None = None):
        if judge.prompt.kind != "pairwise":
            raise ValueError(f"prompt {judge.prompt.name!r} is a {judge.prompt.kind} prompt, not pairwise")
        self.judge = judge
        self.name = name or judge.model_label

    def fingerprint(self) -> str:
        return self.judge.fingerprint()

    def info(self) -> dict[str, Any]:
        return self.judge.info()

    def usage(self) -> JudgeUsage | None:
        return self.judge.usage

    def choose(self, shown: Sequence[Shown], progress: Progress | None = None) -> list[OrderVerdict]:
        judgements = self.judge.judge([pairwise_messages(self.judge, s) for s in shown], progress)
        return [OrderVerdict(None if j.values is None else _VERDICT_CHOICE[j.values["verdict"]], j)
                for j in judgements]


class FunctionPairJudge:
    """A scripted pair judge (the baselines): a function of one presentation."""

    def __init__(self, name: str, fn: Callable[[Shown], Choice], identity: Any = None):
        self.name = name
        self.fn = fn
        self._identity = identity if identity is not None else name

    def fingerprint(self) -> str:
        return stable_hash({"baseline": self._identity})

    def info(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint(), "model_label": self.name, "baseline": self._identity}

    def usage(self) -> JudgeUsage | None:
        return None

    def choose(self, shown: Sequence[Shown], progress: Progress | None = None) -> list[OrderVerdict]:
        out = []
        for s in shown:
            choice = self.fn(s)
            verdict = {"first": "A", "second": "B", "tie": "tie"}[choice]
            out.append(OrderVerdict(choice, Judgement({"verdict": verdict}, attempts=0)))
        if progress is not None:
            progress(len(shown))
        return out


def always_first() -> FunctionPairJudge:
    return FunctionPairJudge("always first", lambda s: "first")


def longer_wins() -> FunctionPairJudge:
    """The longer answer (in characters) wins; equal lengths tie."""

    def fn(s: Shown) -> Choice:
        a, b = len(s.first), len(s.second)
        return "first" if a > b else "second" if b > a else "tie"

    return FunctionPairJudge("longer wins", fn)


def random_judge(seed: int) -> FunctionPairJudge:
    """A fair coin per presentation, seeded by `seed` and the presentation's text, so the
    same study gives the same coins."""

    def fn(s: Shown) -> Choice:
        rng = random.Random(stable_hash([seed, s.request, s.first, s.second]))
        return "first" if rng.random() < 0.5 else "second"

    return FunctionPairJudge(f"random (seed {seed})", fn, identity={"random": seed})


BASELINES: dict[str, Callable[[int], FunctionPairJudge]] = {
    "always first": lambda seed: always_first(),
    "longer wins": lambda seed: longer_wins(),
    "random": random_judge,
}


@dataclass(frozen=True)
class PairOutcome:
    """Both orders of one pair. forward: x shown first; backward: y shown first."""

    query: PairQuery
    forward: OrderVerdict
    backward: OrderVerdict

    @property
    def forward_side(self) -> Side | None:
        c = self.forward.choice
        return None if c is None else "x" if c == "first" else "y" if c == "second" else "tie"

    @property
    def backward_side(self) -> Side | None:
        c = self.backward.choice
        return None if c is None else "y" if c == "first" else "x" if c == "second" else "tie"

    @property
    def consistent(self) -> bool | None:
        f, b = self.forward_side, self.backward_side
        return None if f is None or b is None else f == b

    @property
    def final(self) -> Side | None:
        """The order-stable verdict; an order-dependent one is a tie; None when unscored."""
        f, b = self.forward_side, self.backward_side
        if f is None or b is None:
            return None
        return f if f == b else "tie"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.query.key, "final": self.final, "consistent": self.consistent,
            "forward": {"choice": self.forward.choice, **self.forward.judgement.to_json()},
            "backward": {"choice": self.backward.choice, **self.backward.judgement.to_json()},
        }


def judge_pairs(judge: PairJudge, queries: Sequence[PairQuery], progress: Progress | None = None) -> list[PairOutcome]:
    """Both orders of every pair, in one batch of 2n presentations."""
    shown = [Shown(q.request, q.x, q.y) for q in queries] + [Shown(q.request, q.y, q.x) for q in queries]
    verdicts = judge.choose(shown, progress)
    n = len(queries)
    return [PairOutcome(q, verdicts[i], verdicts[n + i]) for i, q in enumerate(queries)]


@dataclass(frozen=True)
class PairStats:
    """x's win / tie / loss rates over scored pairs (Wilson CIs), order consistency and the
    share of decisive single-order verdicts that chose the response shown first."""

    n: int
    n_unscored: int
    win: MetricValue
    tie: MetricValue
    loss: MetricValue
    consistency: MetricValue
    first_position: MetricValue

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "n_unscored": self.n_unscored,
                **{k: getattr(self, k).to_json() for k in ("win", "tie", "loss", "consistency", "first_position")}}


def first_position_values(outcomes: Sequence[PairOutcome]) -> list[float]:
    """1.0 per decisive single-order verdict that chose the first shown, 0.0 for the second."""
    return [1.0 if v.choice == "first" else 0.0 for o in outcomes for v in (o.forward, o.backward)
            if v.choice in ("first", "second")]


def pair_stats(outcomes: Sequence[PairOutcome]) -> PairStats:
    finals = [o.final for o in outcomes]

    def rate(name: str, side: Side) -> MetricValue:
        return mean_with_ci(name, [None if f is None else float(f == side) for f in finals])

    return PairStats(
        n=len(outcomes), n_unscored=sum(f is None for f in finals),
        win=rate("win", "x"), tie=rate("tie", "tie"), loss=rate("loss", "y"),
        consistency=mean_with_ci("consistency", [None if o.consistent is None else float(o.consistent)
                                                 for o in outcomes]),
        first_position=mean_with_ci("first_position", first_position_values(outcomes)),
    )
