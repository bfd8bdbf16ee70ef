"""transformers backend, CPU or GPU, batched.

Log-likelihood tokenises exactly as lm-eval's `hf` model does (trailing context spaces move
to the continuation; the continuation is the tail of the whole encoding), so answers match
lm-eval's. It is faster because (1) each distinct context runs once, whatever the number or
length of its continuations: multi-token continuations reuse the context's KV cache, and
(2) the LM head and log-softmax run only at the positions that are scored, not the whole
sequence.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.backends import cpu_attention, cpu_linear
from harness.backends.context import refuse_json_schema
from harness.backends.dtypes import resolve_dtype
from harness.backends.fingerprint import folder_fingerprint
from harness.backends.tokenize import count_request_tokens, encode_pair, render_chat, shorten_text
from harness.errors import HarnessError
from harness.types import (
    GenerationOutcome,
    GenerationRequest,
    LoglikelihoodOutcome,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ModelBackend,
    RequestKind,
)

log = logging.getLogger(__name__)


def resolve_model_path(model: str | None, revision: str | None = None) -> Path:
    """A local folder, the embedded default (None or "default"), or a hub id (through the
    local HF cache; HF_HUB_OFFLINE=1 forbids downloads)."""
    if model in (None, "", "default"):
        from harness.backends.models import default_model_dir

        return default_model_dir()
    assert model is not None
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise HarnessError(f"model folder {path} has no config.json")
        return path
    if model.startswith((".", "/", "~")):
        raise HarnessError(f"model folder not found: {model}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, revision=revision))
    except Exception as exc:  # hub errors come in many types
        raise HarnessError(
            f"model {model!r} is neither a local folder nor a loadable hub id "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


@dataclass
class _Pair:
    index: int
    context: list[int]
    continuation: list[int]


class HFBackend(ModelBackend):
    capabilities = frozenset({RequestKind.LOGLIKELIHOOD, RequestKind.GENERATE})

    def __init__(
        self,
        model: str | None = None,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 8,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        prompt_lookup: int = 10,
        packed_linear: bool | int | str = "auto",
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_arg = model or "default"
        self.path = resolve_model_path(model, revision)
        self.revision = revision
        self.batch_size = int(batch_size)
        # chains (greedy or sampled) check up to this many prompt-lookup draft tokens per step (0: off); an
        # execution setting like batch_size: the tokens are those of one-token steps
        self.prompt_lookup = int(prompt_lookup)
        if self.prompt_lookup < 0:
            raise HarnessError(f"prompt_lookup must be 0 (off) or more, got {prompt_lookup}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        # `auto`: bfloat16 on CUDA, float32 on a CPU; the resolved name is recorded and fingerprinted
        self.dtype_requested = dtype
        torch_dtype, self.dtype_name = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(self.path), trust_remote_code=trust_remote_code
        )
        self.model = AutoModelForCausalLM.from_pretrained(
            str(self.path), dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
        self.model.to(self.device)  # type: ignore[arg-type]
        self.model.eval()
        # bit-identical to sdpa, without copying keys and values for grouped heads (CPU only)
        self.attention = cpu_attention.install(self.model)
        self._pack, self.pack_policy = self._pack_policy(packed_linear)
        self.packed_linear = 0  # layers packed, at the first generation request
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        configured = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = int(max_length or configured)
        params = inspect.signature(self.model.forward).parameters
        # transformers 5.x names the KV cache argument `cache`; 4.x `past_key_values`.
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.name = f"hf:{self.model_arg}"
        self._fingerprint: str | None = None

    def _pack_policy(self, wanted: bool | int | str) -> tuple[bool, str]:
        """Whether decode steps get oneDNN-packed linear weights (harness.backends.cpu_linear):
        `auto` where possible, `true` insists, `false` keeps torch's kernels; and the policy as
        recorded in info."""
        choice = str(wanted).strip().lower()
        if choice not in ("auto", "true", "false", "1", "0"):
            raise HarnessError(f"packed_linear must be auto, true or false, got {wanted!r}")
        if choice in ("false", "0"):
            return False, "off: packed_linear=false"
        why_not = cpu_linear.available(self.model, self.device)
        if why_not:
            if choice != "auto":
                raise HarnessError(f"packed_linear=true: not possible here ({why_not})")
            return False, f"off: {why_not}"
        rows = cpu_linear.PACKED_ROWS
        return True, f"on: decode calls of {rows.start}-{rows.stop - 1} rows, packed at the first generation request"

    def _ensure_packed(self) -> None:
        if self._pack and not self.packed_linear:
            self.packed_linear = cpu_linear.pack_linears(self.model)
            if not self.packed_linear:
                self._pack, self.pack_policy = False, "off: the oneDNN check failed (see the log)"

    # -- identity -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = folder_fingerprint(self.path) + f"|dtype={self.dtype_name}"
        return self._fingerprint

    def info(self) -> dict[str, Any]:
        import transformers

        from harness.backends.hf_generate import SAMPLER

        return {
            "backend": "hf",
            "model": self.model_arg,
            "path": str(self.path),
            "revision": self.revision,
            "dtype": self.dtype_name,
            "dtype_requested": self.dtype_requested,
            "device": str(self.device),
            "batch_size": self.batch_size,
            "prompt_lookup": self.prompt_lookup,
            "packed_linear": self.pack_policy,
            "attention": self.attention,
            "sampler": SAMPLER,
            "max_length": self.max_length,
            "fingerprint": self.fingerprint(),
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
            "chat_template": bool(getattr(self.tokenizer, "chat_template", None)),
        }

    # -- context ------------------------------------------------------------------------------
    def context_length(self) -> int | None:
        return self.max_length

    def count_tokens(self, request: LoglikelihoodRequest | GenerationRequest) -> int | None:
        return count_request_tokens(self.tokenizer, request)

    def shorten(self, text: str, n_tokens: int, side: str) -> str | None:
        return shorten_text(self.tokenizer, text, n_tokens, side)

    # -- log-likelihood ---------------------------------------------------------------------
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return encode_pair(self.tokenizer, context, continuation)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutcome]:
        groups: dict[tuple[int, ...], list[_Pair]] = {}
        for i, req in enumerate(requests):
            ctx, cont = self._encode_pair(req.context, req.continuation)
            if not cont:
                raise HarnessError(f"empty continuation after tokenisation: {req.continuation!r}")
            total = len(ctx) + len(cont)
            if total > self.max_length:  # truncate from the left, as lm-eval does
                ctx = ctx[total - self.max_length:]
            groups.setdefault(tuple(ctx), []).append(_Pair(i, ctx, cont))
        # Longest first: padding stays small and memory errors surface at once.
        ordered = sorted(groups.items(), key=lambda kv: -len(kv[0]))
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        with torch.inference_mode(), cpu_linear.plain_kernels(self.model):  # the same kernels before and after packing
            for start in range(0, len(ordered), self.batch_size):
                self._score_batch(ordered[start:start + self.batch_size], results)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _score_batch(
        self, batch: list[tuple[tuple[int, ...], list[_Pair]]], results: list[LoglikelihoodResult | None]
    ) -> None:
        dev = self.device
        ctx_lens = [len(ctx) for ctx, _ in batch]
        width = max(ctx_lens)
        ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ctx, _) in enumerate(batch):
            ids[row, : len(ctx)] = torch.tensor(ctx)
            mask[row, : len(ctx)] = 1
        multi = any(len(p.continuation) > 1 for _, pairs in batch for p in pairs)
        kwargs: dict[str, Any] = {"input_ids": ids.to(dev), "use_cache": multi}
        if multi:
            kwargs["attention_mask"] = mask.to(dev)
        out = self.model.model(**kwargs)
        hidden = out.last_hidden_state
        last = hidden[torch.arange(len(batch)), torch.tensor(ctx_lens) - 1]
        first_logp = torch.log_softmax(self.model.lm_head(last).float(), dim=-1)
        first_greedy = first_logp.argmax(dim=-1)

        tails: list[tuple[int, _Pair]] = []  # (batch row, pair) for continuations > 1 token
        for row, (_, pairs) in enumerate(batch):
            for p in pairs:
                tok = p.continuation[0]
                lp = float(first_logp[row, tok])
                greedy = int(first_greedy[row]) == tok
                results[p.index] = LoglikelihoodResult(lp, greedy, len(p.continuation))
                if len(p.continuation) > 1:
                    tails.append((row, p))
        if tails:
            self._score_tails(out.past_key_values if hasattr(out, "past_key_values") else out.cache,
                              mask, ctx_lens, tails, results)

    def _score_tails(
        self, cache: Any, ctx_mask: torch.Tensor, ctx_lens: list[int],
        tails: list[tuple[int, _Pair]], results: list[LoglikelihoodResult | None],
    ) -> None:
        """Score continuation tokens 2..n from the shared context cache."""
        dev = self.device
        rows = torch.tensor([row for row, _ in tails])
        cache.reorder_cache(rows.to(dev))
        inputs = [p.continuation[:-1] for _, p in tails]
        width = max(len(x) for x in inputs)
        ids = torch.full((len(tails), width), self.tokenizer.pad_token_id, dtype=torch.long)
        cont_mask = torch.zeros((len(tails), width), dtype=torch.long)
        positions = torch.zeros((len(tails), width), dtype=torch.long)
        for j, ((row, _), x) in enumerate(zip(tails, inputs, strict=True)):
            ids[j, : len(x)] = torch.tensor(x)
            cont_mask[j, : len(x)] = 1
            positions[j] = ctx_lens[row] + torch.arange(width)
        attention = torch.cat([ctx_mask[rows], cont_mask], dim=1)
        out = self.model.model(
            input_ids=ids.to(dev), attention_mask=attention.to(dev), position_ids=positions.to(dev),
            use_cache=True, **{self._cache_kw: cache},
        )
        logp = torch.log_softmax(self.model.lm_head(out.last_hidden_state).float(), dim=-1)
        for j, (_, p) in enumerate(tails):
            targets = torch.tensor(p.continuation[1:], device=dev)
            n = len(targets)
            tok_lp = logp[j, :n].gather(-1, targets[:, None]).squeeze(-1)
            greedy = bool((logp[j, :n].argmax(-1) == targets).all())
            prev = results[p.index]
            assert prev is not None
            results[p.index] = LoglikelihoodResult(
                prev.logprob + float(tok_lp.sum()), prev.is_greedy and greedy, len(p.continuation)
            )

    # -- generation ---------------------------------------------------------------------------
    def _render(self, req: GenerationRequest) -> str:
        if req.prompt is not None:
            return req.prompt
        assert req.messages is not None
        return render_chat(self.tokenizer, [{"role": m.role, "content": m.content} for m in req.messages])

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutcome]:
        """Continuous batching over a KV cache (harness/backends/hf_generate.py): each sequence
        stops at its own EOS / stop string / budget, identical prompts (sc@K chains) share one
        prefill, and every sampled chain has its own seeded generator."""
        from harness.backends.hf_generate import Decoder

        refuse_json_schema("hf", requests)
        # Chat templates already hold the special tokens they need.
        prompts = [list(self.tokenizer.encode(self._render(r), add_special_tokens=False)) for r in requests]
        self._ensure_packed()
        decoder = Decoder(self.model, self.tokenizer, self.device, self.batch_size, self._cache_kw,
                          prompt_lookup=self.prompt_lookup, packed=self.packed_linear > 0)
        results = decoder.run(prompts, [r.config for r in requests])
        self.last_generation_stats = decoder.stats
        return list(results)
