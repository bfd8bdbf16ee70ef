"""Any OpenAI-compatible server: OpenAI, `vllm serve`, llama.cpp's server, and others.

Generation uses chat completions (or completions for a plain prompt). Log-likelihood uses
completions with `echo` + `logprobs` (prompt log-probabilities), which only some servers give
correctly: it is served only when the user says so (`prompt_logprobs=true`), and checked by a
probe at start-up, so a task that needs it fails up front rather than silently falling back.

Requests run concurrently (an asyncio semaphore bounds those in flight). Failures come back as
RequestFailure values; retries and backoff live in RetryingBackend. The API key is read from
the environment variable the user names; it is kept out of info(), fingerprints, logs and
error messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from harness.errors import HarnessError
from harness.types import (
    GenerationOutcome,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodOutcome,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ModelBackend,
    RequestFailure,
    RequestKind,
    stable_hash,
)

log = logging.getLogger(__name__)

Q = TypeVar("Q")

# How a server takes a JSON Schema for the reply: OpenAI's and vLLM's `json_schema` form, or
# llama.cpp's (llama-cpp-python's server) `json_object` with the schema beside it.
RESPONSE_FORMATS = ("json_schema", "json_object")


def response_format(form: str, schema: dict[str, Any]) -> dict[str, Any]:
    if form == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
Out = TypeVar("Out")


class OpenAIBackend(ModelBackend):
    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        prompt_logprobs: bool = False,
        batch_size: int = 8,
        revision: str | None = None,
        extra_body: dict[str, Any] | None = None,
        context_length: int | None = None,
        response_format: str = "json_schema",
    ):
        if not model:
            raise HarnessError("the openai backend needs --model NAME (the server's model id)")
        import openai

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.api_key_env = api_key_env
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise HarnessError(f"environment variable {api_key_env} (the API key) is not set")
        self._secret = key
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.revision = revision
        self.extra_body = dict(extra_body or {})
        if response_format not in RESPONSE_FORMATS:
            raise HarnessError(f"--model-args response_format={response_format!r}: expected one of "
                               f"{', '.join(RESPONSE_FORMATS)}")
        self.response_format = response_format
        # max_retries=0: retries are ours (RetryingBackend), bounded and logged.
        self._client = openai.AsyncOpenAI(
            api_key=key or "EMPTY", base_url=self.base_url, max_retries=0, timeout=self.timeout
        )
        self._openai = openai
        self.name = f"openai:{model}"
        kinds = {RequestKind.GENERATE}
        if prompt_logprobs:
            kinds.add(RequestKind.LOGLIKELIHOOD)
        self.capabilities = frozenset(kinds)
        self._usage = {"prompt_tokens": 0, "completion_tokens": 0, "api_requests": 0}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._answered = False  # set once a request got an answer (see _run_all)
        # the model's context: given, else asked of the server once (vLLM, llama.cpp say it)
        self._context_length = int(context_length) if context_length else None
        self._context_asked = self._context_length is not None
        self._can_tokenize = True  # until the server's token counting endpoints all failed
        self._tokenize_endpoint: str | None = None
        if prompt_logprobs:
            self._probe_prompt_logprobs()

    def close(self) -> None:
        async def shut() -> None:
            await self._client.close()

        if not self._loop.is_closed():
            self._loop.run_until_complete(shut())
            self._loop.close()

    # -- identity ---------------------------------------------------------------------------
    def fingerprint(self) -> str:
        # A remote model has no weights we can hash: its name, server and revision stand in.
        return "openai:" + stable_hash({"model": self.model, "base_url": self.base_url,
                                        "revision": self.revision, "extra_body": self.extra_body})

    def info(self) -> dict[str, Any]:
        return {
            "backend": "openai", "model": self.model, "base_url": self.base_url,
            "api_key_env": self.api_key_env, "concurrency": self.concurrency,
            "timeout": self.timeout, "revision": self.revision, "extra_body": self.extra_body,
            "response_format": self.response_format,
            "prompt_logprobs": RequestKind.LOGLIKELIHOOD in self.capabilities,
            "openai_version": self._openai.__version__, "fingerprint": self.fingerprint(),
        }

    def usage(self) -> dict[str, int]:
        return dict(self._usage)

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    # -- context ----------------------------------------------------------------------------
    def _server_root(self) -> str:
        return self.base_url.rstrip("/").removesuffix("/v1")

    def _get_json(self, method: str, url: str, payload: dict[str, Any] | None = None) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self._secret}"} if self._secret else {}
        resp = httpx.request(method, url, json=payload, headers=headers, timeout=min(self.timeout, 30.0))
        resp.raise_for_status()
        return resp.json()

    def context_length(self) -> int | None:
        """`context_length=` when given; else what the server says: vLLM's `max_model_len` in
        /v1/models, llama.cpp's `n_ctx` in /props; None when it says nothing (OpenAI itself)."""
        if not self._context_asked:
            self._context_asked = True
            try:
                models = self._get_json("GET", self.base_url.rstrip("/") + "/models").get("data") or []
                mine = next((m for m in models if m.get("id") == self.model), models[0] if models else {})
                found = mine.get("max_model_len")
                if not found:
                    props = self._get_json("GET", self._server_root() + "/props")
                    found = (props.get("default_generation_settings") or {}).get("n_ctx")
                self._context_length = int(found) if found else None
            except Exception as exc:  # servers without these endpoints: unknown context
                log.debug("the server did not say its context length: %s", self._scrub(str(exc))[:200])
        return self._context_length

    def count_tokens(self, request: LoglikelihoodRequest | GenerationRequest) -> int | None:
        """The server's own count through its /tokenize endpoint (vLLM: `count`, chat template
        applied; llama.cpp: `tokens`, the messages' text without the template); None without one."""
        if not self._can_tokenize:
            return None
        if isinstance(request, LoglikelihoodRequest):
            body: dict[str, Any] = {"prompt": request.context + request.continuation}
        elif request.messages is not None:
            body = {"messages": [{"role": m.role, "content": m.content} for m in request.messages]}
        else:
            body = {"prompt": request.prompt or ""}
        text = body.get("prompt") or "\n".join(m["content"] for m in body.get("messages", []))
        # vLLM and llama.cpp's server: /tokenize; llama-cpp-python's server: /extras/tokenize/count
        # (the messages' text, without the chat template: a few tokens short)
        endpoints = [self._tokenize_endpoint] if self._tokenize_endpoint else ["/tokenize", "/extras/tokenize/count"]
        for endpoint in endpoints:
            try:
                out = self._get_json("POST", self._server_root() + endpoint,
                                     {"model": self.model, **body, "content": text, "input": text})
                count = int(out["count"]) if "count" in out else len(out["tokens"])
            except Exception as exc:
                log.debug("the server cannot count tokens at %s: %s", endpoint, self._scrub(str(exc))[:200])
                continue
            self._tokenize_endpoint = endpoint
            return count
        self._can_tokenize = False
        return None

    # -- plumbing ---------------------------------------------------------------------------
    def _run_all(self, items: Sequence[Q], one: Callable[[Q], Awaitable[Out]]) -> list[Out]:
        """Every item, concurrently. The very first request of the backend goes alone: an
        authentication or unknown-model error stops the run there, before the others are sent."""
        if not self._answered and items:
            first = self._loop.run_until_complete(one(items[0]))
            self._stop_if_fatal([first])
            if not isinstance(first, RequestFailure):
                self._answered = True
            if len(items) == 1:
                return [first]
            rest = self._run_concurrently(items[1:], one)
            self._stop_if_fatal(rest)
            return [first, *rest]
        out = self._run_concurrently(items, one)
        self._stop_if_fatal(out)
        return out

    def _stop_if_fatal(self, outcomes: Sequence[Any]) -> None:
        fatal = next((o for o in outcomes if isinstance(o, RequestFailure) and o.fatal), None)
        if fatal is not None:
            raise HarnessError(f"the server at {self.base_url} refused model {self.model!r}: {fatal.reason} "
                               "(stopping the run: check --model and --api-key-env)")

    def _run_concurrently(self, items: Sequence[Q], one: Callable[[Q], Awaitable[Out]]) -> list[Out]:
        async def main() -> list[Out]:
            sem = asyncio.Semaphore(self.concurrency)

            async def guarded(item: Q) -> Out:
                async with sem:
                    return await one(item)

            return list(await asyncio.gather(*(guarded(i) for i in items)))

        return self._loop.run_until_complete(main())

    def _failure(self, exc: BaseException) -> RequestFailure:
        o = self._openai
        if isinstance(exc, o.APIStatusError):
            status = exc.status_code
            retry_after = None
            header = exc.response.headers.get("retry-after") if exc.response is not None else None
            if header:
                try:
                    retry_after = float(header)
                except ValueError:
                    retry_after = None
            limit = _CONTEXT_REFUSAL.search(str(exc.message)) if status == 400 else None
            if limit:  # the server refused a prompt longer than its context: say so, and remember it
                self._context_length = self._context_length or int(limit.group(1))
                return RequestFailure(f"prompt exceeds context: the server's context is {limit.group(1)} tokens",
                                      retryable=False, context_exceeded=True)
            retryable = status == 429 or status >= 500 or status == 408
            # a bad key, or a model the server does not know: every request would fail alike
            fatal = status in (401, 403) or (status == 404 and "model" in str(exc.message).lower())
            return RequestFailure(self._scrub(f"HTTP {status}: {exc.message}")[:300], retryable, retry_after,
                                  fatal=fatal)
        if isinstance(exc, o.APITimeoutError):
            return RequestFailure(f"timeout after {self.timeout:.0f} s", True)
        if isinstance(exc, o.APIConnectionError):
            return RequestFailure(self._scrub(f"connection error: {exc}")[:300], True)
        if isinstance(exc, (o.APIResponseValidationError, json.JSONDecodeError, KeyError, TypeError,
                            IndexError, ValueError, AttributeError)):
            return RequestFailure(self._scrub(f"malformed response: {type(exc).__name__}: {exc}")[:300], True)
        raise exc

    def _count(self, usage: Any) -> None:
        with self._lock:
            if usage is not None:
                self._usage["prompt_tokens"] += int(getattr(usage, "prompt_tokens", 0) or 0)
                self._usage["completion_tokens"] += int(getattr(usage, "completion_tokens", 0) or 0)

    # -- generation -------------------------------------------------------------------------
    async def _generate_one(self, req: GenerationRequest) -> GenerationOutcome:
        cfg = req.config
        params: dict[str, Any] = {"model": self.model, "max_tokens": cfg.max_tokens,
                                  "temperature": cfg.temperature, "top_p": cfg.top_p}
        if cfg.stop:
            params["stop"] = list(cfg.stop)
        if cfg.seed is not None:
            params["seed"] = cfg.seed
        if self.extra_body:
            params["extra_body"] = self.extra_body
        if cfg.json_schema is not None:
            params["response_format"] = response_format(self.response_format, json.loads(cfg.json_schema))
        self._usage["api_requests"] += 1  # every attempt, failed ones too
        try:
            if req.messages is not None:
                resp = await self._client.chat.completions.create(
                    messages=[{"role": m.role, "content": m.content} for m in req.messages],  # type: ignore[misc]
                    **params,
                )
                self._count(resp.usage)
                choice = resp.choices[0]
                text = choice.message.content
            else:
                resp = await self._client.completions.create(prompt=req.prompt, **params)
                self._count(resp.usage)
                choice = resp.choices[0]
                text = choice.text
            if not isinstance(text, str):
                raise ValueError("no text in the response")
        except Exception as exc:
            return self._failure(exc)
        usage = resp.usage
        return GenerationResult(
            text=text,
            n_prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            n_completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=choice.finish_reason,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutcome]:
        return self._run_all(requests, self._generate_one)

    # -- log-likelihood ---------------------------------------------------------------------
    async def _loglik_one(self, req: LoglikelihoodRequest) -> LoglikelihoodOutcome:
        context, continuation = req.context, req.continuation
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:  # as lm-eval: trailing context spaces belong to the continuation
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        prompt = context + continuation
        self._usage["api_requests"] += 1
        try:
            resp = await self._client.completions.create(
                model=self.model, prompt=prompt, echo=True, logprobs=1, max_tokens=1, temperature=0.0
            )
            self._count(resp.usage)
            return _continuation_logprob(resp.choices[0].logprobs, len(context), len(prompt))
        except Exception as exc:
            return self._failure(exc)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutcome]:
        return self._run_all(requests, self._loglik_one)

    def _probe_prompt_logprobs(self) -> None:
        """Check that the server echoes prompt log-probs, and that they agree with the
        log-prob it gives the same token when generating it: servers that shift echoed
        log-probs by one position (llama.cpp's server does) are refused here."""
        context, token = "The capital of France is", " Paris"
        (out,) = self.loglikelihood([LoglikelihoodRequest(context, token)])
        if isinstance(out, RequestFailure):
            raise HarnessError(
                f"prompt_logprobs=true, but the server at {self.base_url} did not return prompt "
                f"log-probabilities for echo=True ({out.reason}); loglik protocols cannot run there"
            )

        async def next_token() -> Any:
            return await self._client.completions.create(
                model=self.model, prompt=context, max_tokens=1, logprobs=5, temperature=0.0
            )

        resp = self._loop.run_until_complete(next_token())
        top = (resp.choices[0].logprobs.top_logprobs or [{}])[0] if resp.choices[0].logprobs else {}
        generated = top.get(token) if top else None
        if generated is None or out.n_tokens != 1:
            log.warning("prompt log-prob probe inconclusive (%r not among the top tokens)", token)
            return
        if abs(float(generated) - out.logprob) > 0.05:
            raise HarnessError(
                f"the server at {self.base_url} echoes prompt log-probabilities that disagree with "
                f"its own generation log-probabilities ({out.logprob:.3f} vs {float(generated):.3f} "
                f"for {token!r}); they are unusable for loglik protocols"
            )


# OpenAI's (and vLLM's, llama-cpp-python's) message for a prompt longer than the context
_CONTEXT_REFUSAL = re.compile(r"maximum context length is (\d+) tokens", re.I)


def _continuation_logprob(logprobs: Any, start: int, end: int) -> LoglikelihoodOutcome:
    """Sum the echoed log-probs of the tokens in prompt[start:end] (text offsets)."""
    if logprobs is None or not logprobs.tokens:
        raise ValueError("no prompt logprobs in the response (echo unsupported?)")
    offsets = list(logprobs.text_offset)
    tokens = list(logprobs.tokens)
    lps = list(logprobs.token_logprobs)
    tops = list(logprobs.top_logprobs or [None] * len(tokens))
    idx = [i for i, off in enumerate(offsets) if start <= off < end]
    if not idx or offsets[idx[0]] != start:
        return RequestFailure("the server's tokens straddle the context/continuation boundary",
                              retryable=False)
    total = 0.0
    greedy = True
    for i in idx:
        if lps[i] is None:
            raise ValueError(f"no log-probability for prompt token {i}")
        total += float(lps[i])
        top = tops[i]
        if top:
            best = max(top.items(), key=lambda kv: kv[1])[0]
            greedy = greedy and best == tokens[i]
    return LoglikelihoodResult(total, greedy, len(idx))
