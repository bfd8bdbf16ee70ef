"""Rubric-graded open answers (HealthBench: Arora et al., arXiv:2505.08775; grading as in
openai/simple-evals `healthbench_eval.py`). The family: the `healthbench` record adapter, the
`rubric` and `rubric_ideal` protocols and the rubric metrics.

`rubric`: the model under test writes the next assistant turn of the conversation (chat
template, greedy); then the run's `grader` model (RunConfig.aux_models["grader"]) decides for
each rubric item whether that response meets it: one request per item, batched with the other
samples' through the backend stack (retries, the request cache), with a strict JSON reply
({"explanation": ..., "criteria_met": true|false}; harness.scoring.rubric_grading). A reply that
does not parse is asked for once more (a new request with a reminder); if it still does not
parse the *item* is ungraded: the example is unscored, or scored on its graded items with
`RunConfig.rubric.partial` (`--partial-rubrics`). A request that fails after the backend's
bounded retries leaves the whole sample unscored with the reason (as in every protocol).
`rubric_ideal` grades the physicians' stored completion (`ideal_completions_data`) instead of a
model's, as upstream's physician-completions mode does; an example without one is unscored.

Scores as upstream (harness.scoring.rubric): per example, the points of the met items over the
positive points; the task score is the mean clipped to [0, 1] with a seeded bootstrap; theme
(`theme:*` example tags) and axis (`axis:*` item tags) breakdowns; a length-adjusted score
beside it. The grader's prompt text hash, parser and generation settings are in record_info
(and so in the task fingerprint), its model's fingerprint in the record's aux_models.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.data.adapters import ADAPTERS
from harness.errors import HarnessError
from harness.protocols.base import PROTOCOLS, PromptContext, Protocol
from harness.protocols.textgen import greedy_chat_request
from harness.scoring.intervals import MetricValue
from harness.scoring.metrics import METRICS, RatioMetric
from harness.scoring.rubric import (
    AXIS_PREFIX,
    THEME_PREFIX,
    ClippedMean,
    ExampleScore,
    LengthPenalty,
    RubricItem,
    clipped_mean,
    parse_rubric_items,
    score_example,
    summarize,
    tag_value,
)
from harness.scoring.rubric_grading import (
    PARSER_NAME,
    PARSER_VERSION,
    GraderPrompt,
    grader_messages,
    parse_grader_prompt,
    parse_reply,
    retry_messages,
)
from harness.types import (
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    Message,
    Request,
    RequestKind,
    RoutedRequest,
    Sample,
    Score,
)

GRADER = "grader"
MAX_REPLIES = 2  # the first reply and one retry with the reminder
BUILTIN_PROMPT = "rubric_grader.yaml"
HEALTHBENCH_THEMES = ("emergency_referrals", "context_seeking", "global_health", "health_data_tasks",
                      "communication", "hedging", "complex_responses")
HEALTHBENCH_AXES = ("accuracy", "completeness", "context_awareness", "communication_quality",
                    "instruction_following")
_ROW_KEYS = frozenset({"prompt", "rubrics", "example_tags", "prompt_id", "ideal_completions_data", "canary"})
_ROLES = frozenset({"system", "user", "assistant", "developer"})


# -- data ----------------------------------------------------------------------------------

def healthbench_row(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """One row of the upstream HealthBench JSONL (or a user's rubric file in that schema):
    `prompt` (chat messages ending on a user turn), `rubrics` ({criterion, points, tags}),
    optional `example_tags`, `prompt_id`, `ideal_completions_data`, `canary`."""
    unknown = sorted(set(rec) - _ROW_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (HealthBench rows have {', '.join(sorted(_ROW_KEYS))})")
    prompt = rec["prompt"]
    if not isinstance(prompt, list) or not prompt:
        raise ValueError("prompt: expected a non-empty list of {role, content} messages")
    messages = []
    for k, m in enumerate(prompt):
        if (not isinstance(m, Mapping) or set(m) != {"role", "content"} or m["role"] not in _ROLES
                or not isinstance(m["content"], str)):
            raise ValueError(f"prompt[{k}]: expected {{role, content}} with role in {sorted(_ROLES)}, got {m!r:.80}")
        messages.append(Message(m["role"], m["content"]))
    if messages[-1].role != "user":
        raise ValueError("prompt: the conversation must end on a user turn (the model answers it)")
    sample_id = rec.get("prompt_id") or f"{opts.get('id_prefix', 'rubric')}-{i:05d}"
    if not isinstance(sample_id, str):
        raise ValueError(f"prompt_id: expected a string, got {sample_id!r}")
    try:
        items = parse_rubric_items(rec["rubrics"], f"prompt_id {sample_id}")
    except HarnessError as exc:
        raise ValueError(str(exc)) from None
    tags = rec.get("example_tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags) or len(set(tags)) != len(tags):
        raise ValueError(f"example_tags: expected a list of distinct strings, got {tags!r:.80}")
    ideal = rec.get("ideal_completions_data")
    ideal_text = group = None
    if ideal is not None:
        if not isinstance(ideal, Mapping) or not isinstance(ideal.get("ideal_completion"), str):
            raise ValueError("ideal_completions_data: expected null or an object with an ideal_completion string")
        ideal_text, group = ideal["ideal_completion"], ideal.get("ideal_completions_group")
    meta: dict[str, Any] = {"rubrics": [it.to_json() for it in items], "example_tags": list(tags),
                            "ideal_completions_group": group}
    if rec.get("canary") is not None:
        meta["canary"] = str(rec["canary"])
    return Sample(id=sample_id, input=tuple(messages), target=ideal_text, metadata=meta)


def sample_items(sample: Sample) -> tuple[RubricItem, ...]:
    return tuple(RubricItem(r["criterion"], float(r["points"]), tuple(r["tags"])) for r in sample.metadata["rubrics"])


# -- the grader ----------------------------------------------------------------------------

def _settings(ctx: PromptContext) -> Mapping[str, Any]:
    return ctx.family_settings.get("rubric", {})


@functools.lru_cache(maxsize=8)
def _parse_prompt(text: str, source: str) -> GraderPrompt:
    return parse_grader_prompt(text, source)


def grader_prompt(ctx: PromptContext) -> GraderPrompt:
    """The run's grader prompt: RunConfig.rubric.grader_prompt, else the built-in file."""
    given = _settings(ctx).get("grader_prompt")
    if given:
        return _parse_prompt(given["text"], given["source"])
    from harness.data.sources import tasks_dir

    path = tasks_dir() / "prompts" / BUILTIN_PROMPT
    return _parse_prompt(path.read_text(encoding="utf-8"), str(path))


def grader_generation(ctx: PromptContext) -> GenerationConfig:
    s = _settings(ctx)
    return GenerationConfig(max_tokens=s.get("grader_max_tokens") or grader_prompt(ctx).max_tokens,
                            temperature=float(s.get("grader_temperature", 0.0)))


@dataclass(frozen=True)
class _Replies:
    """Every grader reply of one sample, walked in the order the stages asked for them."""

    raw: list[list[str]]  # per item
    retry: list[int]  # items to ask again (their last reply did not parse, attempts left)
    complete: bool  # every reply asked for so far is there


def _walk(replies: Sequence[Any], n_items: int) -> _Replies:
    """Attempt 1 asked every item; each later attempt asks again the items whose last reply
    did not parse, in item order, until MAX_REPLIES."""
    raw: list[list[str]] = [[] for _ in range(n_items)]
    asked = list(range(n_items))
    pos = 0
    for attempt in range(1, MAX_REPLIES + 1):
        if pos + len(asked) > len(replies):
            return _Replies(raw, [], False)
        for k in asked:
            r = replies[pos]
            raw[k].append(r.text if isinstance(r, GenerationResult) else "")
            pos += 1
        failed = [k for k in asked if parse_reply(raw[k][-1]).met is None]
        if not failed or attempt == MAX_REPLIES:
            break
        if pos == len(replies):  # the next attempt is still to be asked
            return _Replies(raw, failed, True)
        asked = failed
    return _Replies(raw, [], True)


class RubricProtocol(Protocol):
    kind = RequestKind.GENERATE
    metrics = ("rubric_score", "rubric_score_length_adjusted", "rubric_ungraded_item_rate")

    def __init__(self, name: str, responses: str):
        self.name = name
        self.responses = responses  # "model" | "ideal"

    def aux_roles(self, ctx: PromptContext) -> tuple[str, ...]:
        return (GRADER,) if GRADER in ctx.aux_roles else ()

    def record_info(self, ctx: PromptContext) -> dict[str, Any]:
        prompt = grader_prompt(ctx)
        return {
            "responses": self.responses,
            "grader_prompt": {"name": prompt.name, "version": prompt.version, "style": prompt.style,
                              "sha256": prompt.content_hash},
            "grader_parser": {"name": PARSER_NAME, "version": PARSER_VERSION, "max_replies": MAX_REPLIES},
            "grader_generation": {"max_tokens": grader_generation(ctx).max_tokens,
                                  "temperature": grader_generation(ctx).temperature},
            "partial_rubrics": bool(_settings(ctx).get("partial", False)),
            "length_penalty": LengthPenalty().to_json(),
        }

    def _response(self, sample: Sample, results: Sequence[Any]) -> str | None:
        if self.responses == "ideal":
            return sample.target if isinstance(sample.target, str) else None
        first = results[0] if results else None
        return first.text if isinstance(first, GenerationResult) else None

    def _grader_requests(self, sample: Sample, response: str, ctx: PromptContext) -> list[Request]:
        prompt, gen = grader_prompt(ctx), grader_generation(ctx)
        assert not isinstance(sample.input, str)
        return [RoutedRequest(GRADER, GenerationRequest(messages=grader_messages(prompt, sample.input, response, it),
                                                        config=gen))
                for it in sample_items(sample)]

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        if GRADER not in ctx.aux_roles:
            raise ValueError("rubric tasks need a grader model: pass --grader-model (and --grader-backend, "
                             "--grader-args), e.g. --grader-model default")
        if isinstance(sample.input, str):
            raise TypeError("rubric tasks need a chat conversation as input")
        if self.responses == "ideal":
            response = self._response(sample, ())
            return [] if response is None else self._grader_requests(sample, response, ctx)
        return [greedy_chat_request(self.name, sample, ctx)]

    def followup(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> list[Request]:
        base = 0 if self.responses == "ideal" else 1
        response = self._response(sample, results)
        if response is None:
            return []
        if len(results) == base:
            return self._grader_requests(sample, response, ctx)
        state = _walk(results[base:], len(sample.metadata["rubrics"]))
        if not state.retry:
            return []
        first = self._grader_requests(sample, response, ctx)
        prompt = grader_prompt(ctx)
        out: list[Request] = []
        for k in state.retry:
            req = first[k]
            assert isinstance(req, RoutedRequest) and req.request.messages is not None
            out.append(RoutedRequest(GRADER, GenerationRequest(
                messages=retry_messages(req.request.messages, state.raw[k][-1], prompt), config=req.request.config)))
        return out

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        response = self._response(sample, results)
        if response is None:
            why = ("no physician-written ideal completion for this example" if self.responses == "ideal"
                   else "no response")
            return Score(None, explanation=why, metadata={"output": None})
        base = 0 if self.responses == "ideal" else 1
        items = sample_items(sample)
        state = _walk(results[base:], len(items))
        grades, met = [], []
        for item, raw in zip(items, state.raw, strict=True):
            replies = [parse_reply(t) for t in raw]
            final = replies[-1] if replies else None
            decided = final.met if final is not None else None
            met.append(decided)
            grades.append({**item.to_json(), "met": decided, "explanation": final.explanation if final else None,
                           "error": "; ".join(r.error for r in replies if r.error) or None, "raw": raw})
        ex = score_example(items, met, sample.metadata.get("example_tags", ()),
                           partial=bool(_settings(ctx).get("partial", False)), response_chars=len(response))
        tokens = {"candidate": [0, 0], GRADER: [0, 0]}
        for k, r in enumerate(results):
            if isinstance(r, GenerationResult):
                role = "candidate" if k < base else GRADER
                tokens[role][0] += r.n_prompt_tokens
                tokens[role][1] += r.n_completion_tokens
        meta = {"output": response, "response_source": self.responses, "grades": grades,
                "example_tags": list(ex.example_tags), "item_tags": list(ex.item_tags),
                "tag_scores": dict(ex.tag_scores), "response_chars": len(response), "tokens": tokens,
                "values": {"n_items": float(ex.n_items), "n_ungraded": float(ex.n_ungraded)}}
        if isinstance(sample.target, str):
            meta["references"] = [sample.target]
        return Score(ex.score, explanation=ex.reason, metadata=meta)


# -- metrics -------------------------------------------------------------------------------

def example_scores(scores: Sequence[Score]) -> list[ExampleScore]:
    """The per-example rubric scores back from stored Scores (a sample whose requests failed
    is an unscored example with no items)."""
    out = []
    for s in scores:
        m = s.metadata
        if "values" not in m or "tag_scores" not in m:
            out.append(ExampleScore(None, {}, 0, 0, s.explanation or "unscored"))
            continue
        out.append(ExampleScore(s.value, dict(m["tag_scores"]), int(m["values"]["n_items"]),
                                int(m["values"]["n_ungraded"]), s.explanation, tuple(m.get("example_tags", ())),
                                tuple(m.get("item_tags", ())), m.get("response_chars")))
    return out


def _metric_value(name: str, c: ClippedMean, details: Mapping[str, Any] | None = None) -> MetricValue:
    extra = {"bootstrap_std": c.bootstrap_std, "unclipped_mean": c.unclipped, **(details or {})}
    method = "none" if c.value is None else "bootstrap-clipped-mean"
    return MetricValue(name, c.value, c.ci_low, c.ci_high, c.n_scored, c.n_unscored, method, extra)


def _table(values: Mapping[str, ClippedMean]) -> dict[str, Any]:
    return {k: {"value": v.value, "ci": [v.ci_low, v.ci_high], "n_scored": v.n_scored, "n_unscored": v.n_unscored}
            for k, v in values.items()}


@dataclass(frozen=True)
class RubricScoreMetric:
    """The task score (clipped mean) with theme and axis tables in its details."""

    name: str
    length_adjusted: bool = False
    higher_is_better: bool = True
    description: str = "HealthBench score: mean of per-example rubric scores, clipped to [0, 1]"

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue:
        examples = example_scores(scores)
        if self.length_adjusted:
            summary = summarize(examples, length_penalty=LengthPenalty())
            assert summary.length_adjusted is not None
            return _metric_value(self.name, summary.length_adjusted, {"length_penalty": LengthPenalty().to_json()})
        summary = summarize(examples)
        return _metric_value(self.name, summary.overall, {
            "by_theme": _table(summary.by_theme), "by_axis": _table(summary.by_axis),
            "n_items": summary.n_items, "n_ungraded_items": summary.n_ungraded_items,
            "n_examples_with_ungraded": summary.n_examples_with_ungraded})


@dataclass(frozen=True)
class RubricTagMetric:
    """The clipped mean over the examples carrying one tag (a theme, an axis, ...)."""

    name: str
    tag: str
    higher_is_better: bool = True

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue:
        values: list[float | None] = []
        for ex in example_scores(scores):
            if self.tag in ex.example_tags or self.tag in ex.item_tags:
                applies, value = tag_value(ex, self.tag)
                if applies:
                    values.append(value)
        return _metric_value(self.name, clipped_mean(values), {"tag": self.tag})


ADAPTERS.add("healthbench", healthbench_row)
RUBRIC = RubricProtocol("rubric", "model")
RUBRIC_IDEAL = RubricProtocol("rubric_ideal", "ideal")
PROTOCOLS.add(RUBRIC.name, RUBRIC)
PROTOCOLS.add(RUBRIC_IDEAL.name, RUBRIC_IDEAL)
METRICS.add("rubric_score", RubricScoreMetric("rubric_score"))
METRICS.add("rubric_score_length_adjusted", RubricScoreMetric(
    "rubric_score_length_adjusted", length_adjusted=True,
    description="rubric_score less HealthBench Professional's length penalty (per 500 characters above 2,000)"))
METRICS.add("rubric_ungraded_item_rate", RatioMetric(
    "rubric_ungraded_item_rate", False, "n_ungraded", "n_items",
    "share of rubric items whose grader reply never parsed (ungraded, not 'not met')"))
for _theme in HEALTHBENCH_THEMES:
    METRICS.add(f"rubric_theme_{_theme}", RubricTagMetric(f"rubric_theme_{_theme}", THEME_PREFIX + _theme))
for _axis in HEALTHBENCH_AXES:
    METRICS.add(f"rubric_axis_{_axis}", RubricTagMetric(f"rubric_axis_{_axis}", AXIS_PREFIX + _axis))
