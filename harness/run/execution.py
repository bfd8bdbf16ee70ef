"""Executing a planned task: requests to the backends (one batch per kind and model), multi-stage
follow-ups, scores appended to the sample log chunk by chunk."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from harness.backends.context import fit_request
from harness.errors import CapabilityError, HarnessError
from harness.run.folder import SampleLog, score_to_json
from harness.run.planning import TaskPlan
from harness.types import (
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    ModelBackend,
    Request,
    RequestFailure,
    RequestKind,
    RoutedRequest,
    Sample,
    Score,
)

ProgressFactory = Callable[[str, int, int], Any]


def check_capabilities(backend: ModelBackend, plans: Sequence[TaskPlan]) -> None:
    """Refuse up front a backend that cannot serve a plan's request kind (never mid-run)."""
    for plan in plans:
        if plan.protocol.kind not in backend.capabilities:
            raise CapabilityError(
                f"backend {backend.name!r} cannot serve {plan.protocol.kind.value} requests "
                f"needed by task {plan.spec.task!r} (protocol {plan.protocol.name})"
            )


def request_size(request: Request) -> int:
    if isinstance(request, RoutedRequest):
        request = request.request
    if isinstance(request, LoglikelihoodRequest):
        return len(request.context) + len(request.continuation)
    return len(request.prompt or "") + sum(len(m.content) for m in request.messages or ())


def blocking_failures(plan: TaskPlan, requests: Sequence[Request], results: Sequence[Any]) -> list[RequestFailure]:
    """The failed requests that leave the sample unscored: every RequestFailure but those of
    requests its protocol absorbs (Protocol.absorbs_failure; a result without its request is
    never absorbed)."""
    out = []
    for k, r in enumerate(results):
        if isinstance(r, RequestFailure):
            request = requests[k] if k < len(requests) else None
            if request is None or not plan.protocol.absorbs_failure(request, plan.ctx):
                out.append(r)
    return out


def score_sample(plan: TaskPlan, sample: Sample, results: Sequence[Any], requests: Sequence[Request] = ()) -> Score:
    """A sample with a failed request is unscored with the reason; never guessed. Failures the
    protocol absorbs (`requests[k]` is the request of `results[k]`) go to its `score`; the score
    is then marked request_failed with their reasons (counted for the exit status, and the
    sample is scored again on resume) unless none was sent (a prompt too long for its model)."""
    failures = blocking_failures(plan, requests, results)
    too_long = [f for f in failures if f.context_exceeded]
    if too_long:  # not sent: not a failed request
        return Score(None, explanation=too_long[0].reason, metadata={"context_exceeded": True})
    if failures:
        return Score(None, explanation=f"request failed: {failures[0].reason}",
                     metadata={"request_failed": True, "failures": [f.reason for f in failures]})
    score = plan.protocol.score(sample, results, plan.ctx)
    absorbed = [r.reason for r in results if isinstance(r, RequestFailure) and not r.context_exceeded]
    if absorbed:
        score = replace(score, metadata={**score.metadata, "request_failed": True, "failures": absorbed})
    if "tokens" not in score.metadata:
        tokens = sample_tokens(requests, results)
        if tokens:
            score = replace(score, metadata={**score.metadata, "tokens": tokens})
    return score


def sample_tokens(requests: Sequence[Request], results: Sequence[Any]) -> dict[str, list[int]]:
    """Generation tokens [prompt, completion] per model role ("candidate" for the model under
    test), for the cost report (harness.scoring.cost.run_usage); protocols that count their own
    (rubric) keep theirs. Counted whether or not the cache served the result."""
    tokens: dict[str, list[int]] = {}
    for request, result in zip(requests, results, strict=False):
        if isinstance(result, GenerationResult):
            role = request.role if isinstance(request, RoutedRequest) else "candidate"
            pair = tokens.setdefault(role, [0, 0])
            pair[0] += result.n_prompt_tokens
            pair[1] += result.n_completion_tokens
    return tokens


def call_by_kind(backend: ModelBackend, requests: Sequence[Request]) -> list[Any]:
    """One call per request kind; results back in request order."""
    results: list[Any] = [None] * len(requests)
    for kind in RequestKind:
        idx = [i for i, r in enumerate(requests) if r.kind == kind]
        if not idx:
            continue
        if kind == RequestKind.LOGLIKELIHOOD:
            ll = [r for r in (requests[i] for i in idx) if isinstance(r, LoglikelihoodRequest)]
            out: list[Any] = backend.loglikelihood(ll)
        else:
            gen = [r for r in (requests[i] for i in idx) if isinstance(r, GenerationRequest)]
            out = backend.generate(gen)
        for i, res in zip(idx, out, strict=True):
            results[i] = res
    return results


def dispatch(backends: Mapping[str | None, ModelBackend], requests: Sequence[Request], *,
             truncate: str | None = None, truncated: set[int] | None = None) -> list[Any]:
    """Like call_by_kind, but RoutedRequests go to the auxiliary backend of their role (key None is the
    model under test); results back in request order. A request longer than its model's context is
    not sent (its result: a context_exceeded RequestFailure) unless `truncate` cuts it to fit; the
    positions of cut requests are added to `truncated`."""
    by_role: dict[str | None, list[int]] = {}
    for i, r in enumerate(requests):
        by_role.setdefault(r.role if isinstance(r, RoutedRequest) else None, []).append(i)
    results: list[Any] = [None] * len(requests)
    for role, idx in by_role.items():
        if role not in backends:
            raise HarnessError(f"a protocol asked for the {role!r} model, but the run configures none")
        batch = [r.request if isinstance(r, RoutedRequest) else r for r in (requests[i] for i in idx)]
        send: list[int] = []
        for pos, (i, req) in enumerate(zip(idx, batch, strict=True)):
            fitted = fit_request(backends[role], req, truncate)
            if fitted.request is None:
                results[i] = fitted.failure()
                continue
            if fitted.truncated:
                batch[pos] = fitted.request
                if truncated is not None:
                    truncated.add(i)
            send.append(pos)
        if not send:
            continue
        out = call_by_kind(backends[role], [batch[pos] for pos in send])
        for pos, res in zip(send, out, strict=True):
            results[idx[pos]] = res
    return results


def execute_task(plan: TaskPlan, backends: Mapping[str | None, ModelBackend], sample_log: SampleLog, *,
                 chunk_size: int, progress: ProgressFactory | None = None) -> None:
    """Score the task's samples not yet in the sample log, chunk by chunk (resumable)."""
    done = sample_log.done(plan.key)
    # Longest prompts first: chunks (and so backend batches) hold prompts of similar
    # length, which keeps padding small; results are keyed by id, so order is free.
    todo = sorted((s for s in plan.samples if s.id not in done),
                  key=lambda s: -sum(request_size(r) for r in plan.requests[s.id]))
    bar = progress(plan.key, len(plan.samples), len(plan.samples) - len(todo)) if progress else None
    try:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            chunk_started = time.monotonic()
            flat: list[Request] = []
            spans = []
            for s in chunk:
                reqs = plan.requests[s.id]
                spans.append((len(flat), len(flat) + len(reqs)))
                flat.extend(reqs)
            cut: set[int] = set()
            results = dispatch(backends, flat, truncate=plan.truncate, truncated=cut)
            per_sample = [list(results[a:b]) for a, b in spans]
            asked = [list(plan.requests[s.id]) for s in chunk]  # per sample, the request of each result
            _followups(plan, chunk, per_sample, asked, backends)
            entries: list[dict[str, Any]] = []
            for s, sample_results, sample_requests in zip(chunk, per_sample, asked, strict=True):
                score = score_sample(plan, s, sample_results, sample_requests)
                a, b = spans[len(entries)]
                if any(a <= i < b for i in cut):  # --truncate cut one of its prompts: counted per sample
                    score = replace(score, metadata={**score.metadata, "truncated": plan.truncate})
                entries.append({
                    "task_key": plan.key, "sample_id": s.id, "index": plan.index[s.id],
                    "target": s.target,
                    "prompt": _first_prompt(plan.requests[s.id]),
                    "score": score_to_json(score),
                })
            per_sample_s = round((time.monotonic() - chunk_started) / max(len(entries), 1), 4)
            for entry in entries:  # a task's duration over resumed sessions is the sum of these
                entry["elapsed_s"] = per_sample_s
            sample_log.append(entries)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def _first_prompt(requests: Sequence[Request]) -> Any:
    """The stored prompt of a sample: its first request's (None when it needed none, e.g. a
    rubric_ideal sample without a stored completion)."""
    if not requests:
        return None
    key = requests[0].key()
    return key.get("context") or key.get("messages")


def _followups(plan: TaskPlan, chunk: Sequence[Sample], per_sample: list[list[Any]], asked: list[list[Request]],
               backends: Mapping[str | None, ModelBackend]) -> None:
    """Run later stages of multi-stage protocols, batched across the chunk, until every
    sample is done; each stage's requests and results are appended to `asked` and `per_sample`.
    A failed request ends that sample's stages (it is unscored), unless its protocol absorbs it."""
    while True:
        pending: list[tuple[int, list[Request]]] = []
        for i, (s, res) in enumerate(zip(chunk, per_sample, strict=True)):
            if blocking_failures(plan, asked[i], res):
                continue
            nxt = plan.protocol.followup(s, res, plan.ctx)
            if nxt:
                pending.append((i, nxt))
        if not pending:
            return
        flat = [r for _, reqs in pending for r in reqs]
        results = dispatch(backends, flat, truncate=plan.truncate)
        pos = 0
        for i, reqs in pending:
            per_sample[i].extend(results[pos:pos + len(reqs)])
            asked[i].extend(reqs)
            pos += len(reqs)
