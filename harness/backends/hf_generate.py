"""Generation for the transformers backend: a continuous-batching decode loop over a KV cache.

Why not `model.generate`: it decodes a whole batch until its LAST sequence ends (finished rows
keep being computed as padding), prefills the same prompt again for every sampled chain, and
draws all rows from one global random stream, so a chain's tokens depend on its batch-mates.
Here, instead:

- every sequence stops at its own EOS, stop string or `max_tokens`, and leaves the batch at
  once; a waiting prompt is prefilled and joins the running batch in its place (continuous
  batching), so the batch stays full and no step is spent on finished rows;
- prompts are taken longest first and a prefill group holds prompts of similar length, so
  padding stays small; padding is on the left, with the attention mask and explicit position ids
  of each row, so a row's result does not depend on its batch-mates (tested against unbatched
  greedy decoding on the real model); columns that every active row pads are trimmed away;
- identical prompts are prefilled once: the K chains of `sc@K` sample from copies of one cache;
- each sampled chain draws from its own `torch.Generator` seeded with its request's seed, so a
  chain is reproducible whatever else is in the batch;
- the LM head runs only at the last prompt position during prefill;
- the KV cache writes each step into preallocated buffers (harness.backends.kv_cache) instead of
  copying the whole cache with `torch.cat` every step, which dominated long transcripts.

Sampling applies temperature then top-p (no hidden top-k), as the OpenAI-compatible servers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.backends.kv_cache import BufferCache, drop_front, set_layer, supports_buffers
from harness.types import GenerationConfig, GenerationResult

# A prefill group takes prompts down to this fraction of its longest one (plus a few tokens).
_PAD_RATIO = 0.75
_PAD_SLACK = 16
# Room a cache buffer keeps for tokens to come; longer chains double it as they go.
_MAX_RESERVE = 512


@dataclass
class _Chain:
    index: int
    config: GenerationConfig
    n_prompt: int
    generator: torch.Generator | None
    out: list[int] = field(default_factory=list)
    finish: str | None = None
    max_stop: int = 0


@dataclass
class _Unit:
    """One distinct prompt and the chains (requests) that continue it."""

    prompt: list[int]
    chains: list[_Chain]


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "past_key_values", None)
    return cache if cache is not None else out.cache


def _left_pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Decoder:
    """Runs generation requests (already rendered to token ids) through a causal LM."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, batch_size: int,
                 cache_kw: str = "cache"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.cache_kw = cache_kw
        eos: set[int] = set()
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if isinstance(configured, int):
            eos.add(configured)
        elif configured:
            eos.update(int(x) for x in configured)
        self.eos = eos
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.buffers = supports_buffers(model)
        self.stats = {"prefill_tokens": 0, "padded_prefill_tokens": 0, "decode_steps": 0,
                      "decoded_rows": 0}

    # -- public -----------------------------------------------------------------------------
    def run(self, prompts: Sequence[list[int]], configs: Sequence[GenerationConfig]) -> list[GenerationResult]:
        units: dict[tuple[int, ...], _Unit] = {}
        chains: list[_Chain] = []
        for i, (ids, cfg) in enumerate(zip(prompts, configs, strict=True)):
            gen = None
            if cfg.temperature > 0 and cfg.seed is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(int(cfg.seed))
            chain = _Chain(i, cfg, len(ids), gen, max_stop=max((len(s) for s in cfg.stop), default=0))
            chains.append(chain)
            units.setdefault(tuple(ids), _Unit(list(ids), [])).chains.append(chain)
        pending = sorted(units.values(), key=lambda u: -len(u.prompt))
        with torch.inference_mode():
            self._loop(pending)
        return [self._result(c) for c in chains]

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self, pending: list[_Unit]) -> None:
        active: list[_Chain] = []
        cache: Any = None
        mask: torch.Tensor | None = None  # [rows, cache length], 1 = real token
        positions: torch.Tensor | None = None  # [rows]: position id of each row's pending token
        while pending or active:
            free = self.batch_size - len(active)
            if pending and (not active or len(pending[0].chains) <= free):
                group = self._take(pending, free if active else max(free, len(pending[0].chains)))
                new_cache, new_mask, new_pos, new_chains = self._prefill(group)
                if new_chains:
                    if cache is None:
                        cache, mask, positions, active = new_cache, new_mask, new_pos, new_chains
                    else:
                        assert mask is not None and positions is not None
                        cache, mask = self._merge(cache, mask, new_cache, new_mask)
                        positions = torch.cat([positions, new_pos])
                        active = active + new_chains
                continue  # fill more free slots before the next decode step
            if not active:
                continue
            assert mask is not None and positions is not None
            ids = torch.tensor([[c.out[-1]] for c in active], device=self.device)
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions[:, None],
                             use_cache=True, **{self.cache_kw: cache})
            cache = _cache_of(out)
            self.stats["decode_steps"] += 1
            self.stats["decoded_rows"] += len(active)
            self._choose(out.logits[:, -1], active)
            positions = positions + 1
            keep = [r for r, c in enumerate(active) if c.finish is None]
            if len(keep) < len(active):
                active = [active[r] for r in keep]
                if not active:
                    cache, mask, positions = None, None, None
                    continue
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                cache, mask = self._trim(cache, mask)

    def _take(self, pending: list[_Unit], room: int) -> list[_Unit]:
        """Prompts for one prefill: longest first, while they fit and are of similar length."""
        group = [pending.pop(0)]
        used = len(group[0].chains)
        floor = _PAD_RATIO * len(group[0].prompt) - _PAD_SLACK
        while pending and used + len(pending[0].chains) <= room and len(pending[0].prompt) >= floor:
            unit = pending.pop(0)
            group.append(unit)
            used += len(unit.chains)
        return group

    def _prefill(self, group: list[_Unit]) -> tuple[Any, torch.Tensor, torch.Tensor, list[_Chain]]:
        width = max(len(u.prompt) for u in group)
        ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, unit in enumerate(group):
            ids[row, width - len(unit.prompt):] = torch.tensor(unit.prompt, dtype=torch.long)
            mask[row, width - len(unit.prompt):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
        self.stats["prefill_tokens"] += sum(len(u.prompt) for u in group)
        self.stats["padded_prefill_tokens"] += width * len(group)
        kwargs: dict[str, Any] = {"input_ids": ids, "position_ids": pos, "use_cache": True,
                                  "logits_to_keep": 1}
        if len(group) > 1:
            kwargs["attention_mask"] = mask
        if self.buffers:
            budget = max(c.config.max_tokens for u in group for c in u.chains)
            kwargs[self.cache_kw] = BufferCache(min(budget, _MAX_RESERVE))
        out = self.model(**kwargs)
        cache = _cache_of(out)
        rows = [r for r, u in enumerate(group) for _ in u.chains]
        chains = [c for u in group for c in u.chains]
        index = torch.tensor(rows, device=self.device)
        if rows != list(range(len(group))):
            cache.batch_select_indices(index)
        self._choose(out.logits[index, -1], chains)
        live = [j for j, c in enumerate(chains) if c.finish is None]
        positions = torch.tensor([c.n_prompt for c in chains], device=self.device)
        keep = torch.tensor(live, device=self.device)
        if len(live) < len(chains):
            cache.batch_select_indices(keep)
        return cache, mask[index][keep], positions[keep], [chains[j] for j in live]

    def _merge(self, cache: Any, mask: torch.Tensor, new_cache: Any,
               new_mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Append the rows of `new_cache` to `cache`, left-padding the shorter one in time."""
        width = max(mask.shape[1], new_mask.shape[1])
        pad_old, pad_new = width - mask.shape[1], width - new_mask.shape[1]
        for old, new in zip(cache.layers, new_cache.layers, strict=True):
            set_layer(old, torch.cat([_left_pad(old.keys, pad_old, 2), _left_pad(new.keys, pad_new, 2)]),
                      torch.cat([_left_pad(old.values, pad_old, 2), _left_pad(new.values, pad_new, 2)]))
        mask = torch.cat([_left_pad(mask, pad_old, 1), _left_pad(new_mask, pad_new, 1)])
        return cache, mask

    @staticmethod
    def _trim(cache: Any, mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Drop the leading columns that every row pads (left after the longest rows finished)."""
        real = mask.any(dim=0).nonzero()
        first = int(real[0]) if len(real) else 0
        if first > 0:
            for layer in cache.layers:
                drop_front(layer, first)
            mask = mask[:, first:]
        return cache, mask

    # -- tokens -------------------------------------------------------------------------------
    def _choose(self, logits: torch.Tensor, chains: list[_Chain]) -> None:
        logits = logits.float()
        greedy = logits.argmax(dim=-1).tolist()
        for row, chain in enumerate(chains):
            cfg = chain.config
            tok = greedy[row] if cfg.temperature <= 0 else self._sample(logits[row], chain)
            chain.out.append(int(tok))
            if tok in self.eos:
                chain.finish = "stop"
            elif chain.max_stop and self._hit_stop(chain):
                chain.finish = "stop"
            elif len(chain.out) >= cfg.max_tokens:
                chain.finish = "length"

    @staticmethod
    def _sample(logits: torch.Tensor, chain: _Chain) -> int:
        cfg = chain.config
        scaled = logits / cfg.temperature
        if cfg.top_p < 1.0:
            sorted_logits, order = torch.sort(scaled, descending=True)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
            drop = cum - torch.softmax(sorted_logits, dim=-1) >= cfg.top_p  # keeps at least one
            scaled = scaled.clone()
            scaled[order[drop]] = float("-inf")
        probs = torch.softmax(scaled, dim=-1)
        return int(torch.multinomial(probs, 1, generator=chain.generator))

    def _hit_stop(self, chain: _Chain) -> bool:
        tail = self.tokenizer.decode(chain.out[-(chain.max_stop + 8):], skip_special_tokens=True)
        return any(s in tail for s in chain.config.stop)

    def _result(self, chain: _Chain) -> GenerationResult:
        text = str(self.tokenizer.decode(chain.out, skip_special_tokens=True))
        finish = chain.finish or "length"
        for stop in chain.config.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        return GenerationResult(text, chain.n_prompt, len(chain.out), finish)
