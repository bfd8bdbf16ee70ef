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
`RunConfig.rubric.partial` (`--partial-rubrics`). A grader request that fails after the
backend's bounded retries takes the same path (its item ungraded, the reason in the item's grade
record; `absorbs_failure`), and the runner marks the sample request_failed: it counts for the
run's exit status and is graded again on resume. A failure of the candidate's own request
leaves the whole sample unscored (as in every protocol).

A jury: the graders `grader`, `grader_2`, ... (`--grader-model` given several times) each
decide every item independently (their requests grader-major, so one grader's are today's); the
example's score is the mean of the graders' example scores (harness.scoring.rubric.jury_example),
each grader's decisions, score and counts are kept per sample, and `rubric_score`'s details hold
each grader's own score, ungraded and failed counts, and Krippendorff's alpha over the item
decisions (harness.protocols.rubric_metrics). Leave-one-grader-out rank stability needs several candidate runs:
`harness judge rubric` (judges.rubric_jury) reports it.

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
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.data.adapters import ADAPTERS
from harness.errors import HarnessError
from harness.protocols.base import PROTOCOLS, PromptContext, Protocol
from harness.protocols.textgen import greedy_chat_request
from harness.scoring.rubric import (
    ExampleScore,
    LengthPenalty,
    RubricItem,
    jury_example,
    parse_rubric_items,
    score_example,
)
from harness.scoring.rubric_grading import (
    PARSER_NAME,
    PARSER_VERSION,
    REPLY_SCHEMA,
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
    RequestFailure,
    RequestKind,
    RoutedRequest,
    Sample,
    Score,
)

GRADER = "grader"  # the grader's aux role; a jury's further graders: grader_2, grader_3, ...
_GRADER_ROLE = re.compile(r"^grader(?:_([2-9]|[1-9]\d+))?$")
MAX_REPLIES = 2  # the first reply and one retry with the reminder
BUILTIN_PROMPT = "rubric_grader.yaml"
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

def grader_role(k: int) -> str:
    """The aux role of a jury's k-th grader (0-based): grader, grader_2, grader_3, ..."""
    if k < 0:
        raise ValueError(f"grader index must be >= 0, got {k}")
    return GRADER if k == 0 else f"{GRADER}_{k + 1}"


def grader_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The grader roles among a run's aux roles, in jury order (grader, grader_2, ...)."""
    found = [r for r in roles if _GRADER_ROLE.match(r)]
    return tuple(sorted(found, key=lambda r: 1 if r == GRADER else int(r.rsplit("_", 1)[1])))


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
                            temperature=float(s.get("grader_temperature", 0.0)),
                            json_schema=json.dumps(REPLY_SCHEMA, sort_keys=True) if s.get("structured") else None)


@dataclass(frozen=True)
class _Replies:
    """Every grader reply of one sample, walked in the order the stages asked for them; a unit is
    (grader index, item index)."""

    raw: dict[tuple[int, int], list[str]]  # per unit, its replies' texts
    failed: dict[tuple[int, int], RequestFailure]  # units whose request failed: ungraded, not asked again
    retry: list[tuple[int, int]]  # units to ask again (their last reply did not parse, attempts left)
    tokens: dict[int, list[int]]  # per grader, [prompt, completion] tokens of its replies
    complete: bool  # every reply asked for so far is there


def _walk(replies: Sequence[Any], n_graders: int, n_items: int) -> _Replies:
    """Attempt 1 asked every unit (grader-major: each grader's items in item order); each later
    attempt asks again the units whose last reply did not parse, in that order, until
    MAX_REPLIES. A unit whose request failed (after the backend's bounded retries) is not asked
    again: its item is ungraded by that grader."""
    units = [(g, k) for g in range(n_graders) for k in range(n_items)]
    raw: dict[tuple[int, int], list[str]] = {u: [] for u in units}
    failed: dict[tuple[int, int], RequestFailure] = {}
    tokens = {g: [0, 0] for g in range(n_graders)}
    asked = units
    pos = 0
    for attempt in range(1, MAX_REPLIES + 1):
        if pos + len(asked) > len(replies):
            return _Replies(raw, failed, [], tokens, False)
        for u in asked:
            r = replies[pos]
            if isinstance(r, RequestFailure):
                failed[u] = r
            else:
                raw[u].append(r.text if isinstance(r, GenerationResult) else "")
                if isinstance(r, GenerationResult):
                    tokens[u[0]][0] += r.n_prompt_tokens
                    tokens[u[0]][1] += r.n_completion_tokens
            pos += 1
        again = [u for u in asked if u not in failed and parse_reply(raw[u][-1]).met is None]
        if not again or attempt == MAX_REPLIES:
            break
        if pos == len(replies):  # the next attempt is still to be asked
            return _Replies(raw, failed, again, tokens, True)
        asked = again
    return _Replies(raw, failed, [], tokens, True)


def _grade(raw: list[str], failure: RequestFailure | None) -> dict[str, Any]:
    """One grader's decision on one item: met (None = ungraded), the last reply's explanation,
    every error (unparseable replies, a failed request) and every raw reply."""
    replies = [parse_reply(t) for t in raw]
    final = replies[-1] if replies else None
    errors = [r.error for r in replies if r.error]
    if failure is not None:
        errors.append(f"{'not sent' if failure.context_exceeded else 'request failed'}: {failure.reason}")
    grade: dict[str, Any] = {"met": None if failure is not None or final is None else final.met,
                             "explanation": final.explanation if final else None,
                             "error": "; ".join(errors) or None, "raw": raw}
    if failure is not None:
        grade["failure"] = failure.reason
    return grade


class RubricProtocol(Protocol):
    kind = RequestKind.GENERATE
    metrics = ("rubric_score", "rubric_score_length_adjusted", "rubric_ungraded_item_rate")

    def __init__(self, name: str, responses: str):
        self.name = name
        self.responses = responses  # "model" | "ideal"

    def aux_roles(self, ctx: PromptContext) -> tuple[str, ...]:
        return grader_roles(ctx.aux_roles)

    def absorbs_failure(self, request: Request, ctx: PromptContext) -> bool:
        """A grader's request: its failure leaves only that item ungraded by that grader."""
        return isinstance(request, RoutedRequest) and request.role in grader_roles(ctx.aux_roles)

    def record_info(self, ctx: PromptContext) -> dict[str, Any]:
        prompt, gen = grader_prompt(ctx), grader_generation(ctx)
        info: dict[str, Any] = {
            "responses": self.responses,
            "grader_prompt": {"name": prompt.name, "version": prompt.version, "style": prompt.style,
                              "sha256": prompt.content_hash},
            "grader_parser": {"name": PARSER_NAME, "version": PARSER_VERSION, "max_replies": MAX_REPLIES},
            "grader_generation": {"max_tokens": gen.max_tokens, "temperature": gen.temperature,
                                  **({"structured_output": REPLY_SCHEMA} if gen.json_schema else {})},
            "partial_rubrics": bool(_settings(ctx).get("partial", False)),
            "length_penalty": LengthPenalty().to_json(),
        }
        graders = grader_roles(ctx.aux_roles)
        if len(graders) > 1:  # only for a jury, so a single grader's record (and fingerprint) stay put
            info["jury"] = {"graders": list(graders), "score": "mean of the graders' example scores",
                            "agreement": "Krippendorff's alpha (nominal) over the item decisions",
                            "judges_the_model": self.responses == "model"}  # not the physicians' texts
        return info

    def finish_extra(self, extra: dict[str, Any], candidate: str | None) -> dict[str, Any]:
        """A jury's graders of the candidate's model family, flagged in the "jury" block
        (self-preference bias); None / "default" is the embedded default model. A jury that
        grades stored texts (`judges_the_model` false: e.g. physicians' completions) flags none."""
        jury = extra.get("jury")
        if not isinstance(jury, dict):
            return extra
        from harness.backends.models import DEFAULT_MODEL_NAME  # lazily: keeps protocol imports light
        from harness.scoring.jury import same_family

        flags = []
        if jury.get("judges_the_model", True):
            aux = extra.get("aux_models") or {}
            cand = DEFAULT_MODEL_NAME if candidate in (None, "default") else str(candidate)
            for role in jury.get("graders", ()):
                name = (aux.get(role) or {}).get("name") or "default"
                shared = same_family(DEFAULT_MODEL_NAME if name == "default" else name, cand)
                if shared:
                    flags.append({"grader": role, "model": name, "families": list(shared)})
        return {**extra, "jury": {**jury, "same_family_as_candidate": flags}}

    def _response(self, sample: Sample, results: Sequence[Any]) -> str | None:
        if self.responses == "ideal":
            return sample.target if isinstance(sample.target, str) else None
        first = results[0] if results else None
        return first.text if isinstance(first, GenerationResult) else None

    def _item_requests(self, sample: Sample, response: str, ctx: PromptContext) -> list[GenerationRequest]:
        prompt, gen = grader_prompt(ctx), grader_generation(ctx)
        assert not isinstance(sample.input, str)
        return [GenerationRequest(messages=grader_messages(prompt, sample.input, response, it), config=gen)
                for it in sample_items(sample)]

    def _grader_requests(self, sample: Sample, response: str, ctx: PromptContext) -> list[Request]:
        """Every grader's request for every item, grader-major (one grader: today's order)."""
        items = self._item_requests(sample, response, ctx)
        return [RoutedRequest(role, req) for role in grader_roles(ctx.aux_roles) for req in items]

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
        graders = grader_roles(ctx.aux_roles)
        state = _walk(results[base:], len(graders), len(sample.metadata["rubrics"]))
        if not state.retry:
            return []
        first = self._item_requests(sample, response, ctx)
        prompt = grader_prompt(ctx)
        out: list[Request] = []
        for g, k in state.retry:
            req = first[k]
            assert req.messages is not None
            out.append(RoutedRequest(graders[g], GenerationRequest(
                messages=retry_messages(req.messages, state.raw[(g, k)][-1], prompt), config=req.config)))
        return out

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        response = self._response(sample, results)
        if response is None:
            why = ("no physician-written ideal completion for this example" if self.responses == "ideal"
                   else "no response")
            return Score(None, explanation=why, metadata={"output": None})
        base = 0 if self.responses == "ideal" else 1
        items = sample_items(sample)
        graders = grader_roles(ctx.aux_roles)
        state = _walk(results[base:], len(graders), len(items))
        partial = bool(_settings(ctx).get("partial", False))
        tags = sample.metadata.get("example_tags", ())
        grades: dict[str, list[dict[str, Any]]] = {}
        per: dict[str, ExampleScore] = {}
        for g, role in enumerate(graders):
            grades[role] = [_grade(state.raw[(g, k)], state.failed.get((g, k))) for k in range(len(items))]
            per[role] = score_example(items, [x["met"] for x in grades[role]], tags, partial=partial,
                                      response_chars=len(response))
        tokens = {"candidate": [0, 0], **{role: state.tokens[g] for g, role in enumerate(graders)}}
        first = results[0] if base and results else None
        if isinstance(first, GenerationResult):
            tokens["candidate"] = [first.n_prompt_tokens, first.n_completion_tokens]
        meta: dict[str, Any] = {"output": response, "response_source": self.responses}
        if len(graders) == 1:  # exactly the record of a single grader
            ex = per[graders[0]]
            meta["grades"] = [{**it.to_json(), **grade} for it, grade in zip(items, grades[graders[0]], strict=True)]
        else:
            ex = jury_example(per, partial=partial)
            meta["grades"] = [{**item.to_json(), "met_share": _met_share([grades[r][k]["met"] for r in graders]),
                               "by_grader": {r: grades[r][k] for r in graders}} for k, item in enumerate(items)]
            meta["jury"] = {"graders": list(graders), "per_grader": {
                r: {"score": e.score, "reason": e.reason, "tag_scores": dict(e.tag_scores), "n_items": e.n_items,
                    "n_ungraded": e.n_ungraded, "n_failed": sum("failure" in x for x in grades[r])}
                for r, e in per.items()}}
        meta.update({"example_tags": list(ex.example_tags), "item_tags": list(ex.item_tags),
                     "tag_scores": dict(ex.tag_scores), "response_chars": len(response), "tokens": tokens,
                     "values": {"n_items": float(ex.n_items), "n_ungraded": float(ex.n_ungraded)}})
        if isinstance(sample.target, str):
            meta["references"] = [sample.target]
        return Score(ex.score, explanation=ex.reason, metadata=meta)


def _met_share(decisions: Sequence[bool | None]) -> float | None:
    """The share of the graders that decided an item who found it met (None: none decided)."""
    decided = [d for d in decisions if d is not None]
    return sum(decided) / len(decided) if decided else None


ADAPTERS.add("healthbench", healthbench_row)
RUBRIC = RubricProtocol("rubric", "model")
RUBRIC_IDEAL = RubricProtocol("rubric_ideal", "ideal")
PROTOCOLS.add(RUBRIC.name, RUBRIC)
PROTOCOLS.add(RUBRIC_IDEAL.name, RUBRIC_IDEAL)
