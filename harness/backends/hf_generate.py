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
- identical prompts are prefilled once: the K chains of `sc@K` sample from copies of one cache,
  and those beyond the batch's free rows wait, prefilled, for rows to free up (the batch stays
  full instead of waiting for K free rows);
  the prefix that all prompts of a call share (the system prompt, an instruction, few-shot
  examples) is prefilled once and copied into every prefill group's cache;
- each sampled chain draws from its own `torch.Generator` seeded with its request's seed, so a
  chain is reproducible whatever else is in the batch;
- the LM head runs only at the last prompt position during prefill;
- the KV cache writes each step into preallocated buffers (harness.backends.kv_cache) instead of
  copying the whole cache with `torch.cat` every step, which dominated long transcripts;
- chains check prompt-lookup drafts (harness.backends.prompt_lookup): a step feeds each row its
  last token and the draft, keeps the longest prefix that decoding would have produced plus the
  model's next token, and masks the rejected columns out of the cache (compacted when the holes
  pile up). For greedy chains "would have produced" is the argmax; for sampled chains see below.

Sampling applies temperature then top-p (no hidden top-k), as the OpenAI-compatible servers do,
and draws each token by inverting the distribution's CDF at one uniform number from the chain's
generator: one number per token, whether the token comes from a one-token step or from checking
a draft. So a drafted token is kept exactly when the sample at that position equals it, and a
sampled chain with drafts writes the tokens it writes without them (the same exactness as greedy
drafting, not rejection sampling's "same distribution, other tokens"; in both, a wider pass can
change the logits' last float32 bits, which moves a token only when its uniform number falls
within that much of a CDF boundary, or the top two logits tie that closely). torch.multinomial is not
used: it draws a vocabulary's worth of exponentials per token (~0.8 ms for 49k tokens on this
CPU, against one uniform and a cumulative sum), and its stream could not be shared with drafts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from harness.backends.kv_cache import (
    BufferCache,
    compact_holes,
    copy_rows,
    merge_rows,
    supports_buffers,
    trim_front,
)
from harness.backends.prompt_lookup import NgramIndex, choose_width, draft_cap
from harness.types import GenerationConfig, GenerationResult

# How sampled tokens are drawn from a seed (recorded in info; part of sampled requests' cache key).
SAMPLER = "inverse-cdf: one float64 uniform per token from the chain's torch.Generator"

# A prefill group takes prompts down to this fraction of its longest one (plus a few tokens).
_PAD_RATIO = 0.75
_PAD_SLACK = 16
# Room a cache buffer keeps for tokens to come; longer chains double it as they go.
_MAX_RESERVE = 512
# A shared prefix shorter than this is prefilled with each prompt (an extra pass costs more).
_MIN_PREFIX = 8
# Weight of the latest draft token in a chain's agreement estimate.
_AGREE_RATE = 0.2


@dataclass
class _Chain:
    index: int
    config: GenerationConfig
    n_prompt: int
    generator: torch.Generator | None
    out: list[int] = field(default_factory=list)
    finish: str | None = None
    max_stop: int = 0
    prompt: list[int] = field(default_factory=list)
    lookup: NgramIndex | None = None
    drafts: bool = False  # prompt-lookup drafts are checked for this chain
    # share of draft tokens the model agrees with (moving average), learnt also from drafts that
    # were not sent: `shadow` is the latest draft, checked against the tokens as they come
    agree: float = 0.5
    shadow: list[int] = field(default_factory=list)


@dataclass
class _Unit:
    """One distinct prompt and the chains (requests) that continue it."""

    prompt: list[int]
    chains: list[_Chain]


# chains with their cache rows, attention mask rows and next positions
_Rows = tuple[Any, torch.Tensor, torch.Tensor, list[_Chain]]


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "past_key_values", None)
    return cache if cache is not None else out.cache


class Decoder:
    """Runs generation requests (already rendered to token ids) through a causal LM."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, batch_size: int,
                 cache_kw: str = "cache", prompt_lookup: int = 0, share_prefix: bool = True,
                 packed: bool = False):
        self.model = model
        self.packed = packed  # oneDNN linear weights: the step costs drafting is weighed by
        self.share_prefix = share_prefix
        self._prefix: tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self.prompt_lookup = max(0, int(prompt_lookup))
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
        self.stats = {"prefill_calls": 0, "prefill_tokens": 0, "padded_prefill_tokens": 0, "decode_steps": 0,
                      "decoded_rows": 0, "drafted_tokens": 0, "accepted_tokens": 0, "compactions": 0,
                      "parked_rows": 0, "max_rows": 0}

    # -- public -----------------------------------------------------------------------------
    def run(self, prompts: Sequence[list[int]], configs: Sequence[GenerationConfig]) -> list[GenerationResult]:
        units: dict[tuple[int, ...], _Unit] = {}
        chains: list[_Chain] = []
        for i, (ids, cfg) in enumerate(zip(prompts, configs, strict=True)):
            gen = None
            if cfg.temperature > 0 and cfg.seed is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(int(cfg.seed))
            chain = _Chain(i, cfg, len(ids), gen, max_stop=max((len(s) for s in cfg.stop), default=0),
                           drafts=self.prompt_lookup > 0)
            chains.append(chain)
            unit = units.setdefault(tuple(ids), _Unit(list(ids), []))
            unit.chains.append(chain)
            chain.prompt = unit.prompt
        pending = sorted(units.values(), key=lambda u: -len(u.prompt))
        with torch.inference_mode():
            if self.share_prefix and self.buffers:  # copying a prefix's keys: full-attention layers only
                self._prefill_shared_prefix([u.prompt for u in pending])
            self._loop(pending)
        return [self._result(c) for c in chains]

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self, pending: list[_Unit]) -> None:
        active: list[_Chain] = []
        cache: Any = None
        mask: torch.Tensor | None = None  # [rows, cache length], 1 = real token
        positions: torch.Tensor | None = None  # [rows]: position id of each row's pending token
        parked: list[_Rows] = []  # prefilled chains waiting for room (a prompt's chains beyond it)
        while pending or active or parked:
            free = self.batch_size - len(active)
            new: _Rows | None = None
            if parked and free > 0:
                new = self._admit(parked.pop(0), free, parked)
            elif pending and (not active or len(pending[0].chains) <= free or (self.buffers and free > 0)):
                group = self._take(pending, free if active else max(free, len(pending[0].chains)))
                new = self._prefill(group)
                if self.buffers:  # the chains beyond the free rows wait, prefilled
                    new = self._admit(new, free, parked)
            if new is not None:
                new_cache, new_mask, new_pos, new_chains = new
                if new_chains:
                    if cache is None:
                        cache, mask, positions, active = new_cache, new_mask, new_pos, new_chains
                    else:
                        assert mask is not None and positions is not None
                        cache, mask = merge_rows(cache, mask, new_cache, new_mask)
                        positions = torch.cat([positions, new_pos])
                        active = active + new_chains
                continue  # fill more free slots before the next decode step
            if not active:
                continue
            assert mask is not None and positions is not None
            drafts = self._drafts(active)
            width = 1 + max(len(d) for d in drafts)
            ids = torch.full((len(active), width), self.pad_id, dtype=torch.long)
            fresh = torch.zeros((len(active), width), dtype=mask.dtype)
            for r, (c, d) in enumerate(zip(active, drafts, strict=True)):
                ids[r, :1 + len(d)] = torch.tensor([c.out[-1], *d], dtype=torch.long)
                fresh[r, :1 + len(d)] = 1
            mask = torch.cat([mask, fresh.to(self.device)], dim=1)
            step_pos = positions[:, None] + torch.arange(width, device=self.device)
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask, position_ids=step_pos,
                             use_cache=True, **{self.cache_kw: cache})
            cache = _cache_of(out)
            self.stats["decode_steps"] += 1
            self.stats["decoded_rows"] += len(active)
            self.stats["max_rows"] = max(self.stats["max_rows"], len(active))
            kept = self._verify(out.logits, active, drafts)
            if width == 1:
                positions = positions + 1
            else:
                for r, n in enumerate(kept):
                    mask[r, mask.shape[1] - width + n:] = 0
                positions = positions + torch.tensor(kept, device=self.device)
            keep = [r for r, c in enumerate(active) if c.finish is None]
            if len(keep) < len(active):
                active = [active[r] for r in keep]
                if not active:
                    cache, mask, positions = None, None, None
                    continue
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                cache, mask = trim_front(cache, mask)
            if width > 1:
                cache, mask, squeezed = compact_holes(cache, mask)
                self.stats["compactions"] += squeezed

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

    def _admit(self, rows: _Rows, room: int, parked: list[_Rows]) -> _Rows:
        """The first `room` chains of `rows`; the others (copied out of the cache) go to the
        front of `parked`, so a prompt's K chains share one prefill however full the batch is."""
        cache, mask, positions, chains = rows
        if len(chains) <= room:
            return rows
        rest = torch.arange(room, len(chains), device=self.device)
        self.stats["parked_rows"] += len(rest)
        parked.insert(0, (copy_rows(cache, rest, self._new_cache(chains[room:])), mask[rest],
                          positions[rest], chains[room:]))
        head = torch.arange(room, device=self.device)
        cache.batch_select_indices(head)
        return cache, mask[head], positions[head], chains[:room]

    def _new_cache(self, chains: list[_Chain]) -> Any:
        if self.buffers:
            budget = max(c.config.max_tokens for c in chains)
            return BufferCache(min(budget, _MAX_RESERVE))
        return DynamicCache(config=self.model.config)  # sliding-window / linear-attention layers as the model has them

    def _prefill_shared_prefix(self, prompts: list[list[int]]) -> None:
        self._prefix = None
        if len(prompts) < 2:
            return
        first, shortest = prompts[0], min(len(p) for p in prompts) - 1  # each prompt keeps a token
        shared = next((i for i in range(shortest) if any(p[i] != first[i] for p in prompts)), shortest)
        if shared < _MIN_PREFIX:
            return
        ids = torch.tensor([prompts[0][:shared]], dtype=torch.long, device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self.cache_kw: DynamicCache()})
        self.stats["prefill_tokens"] += shared
        self.stats["padded_prefill_tokens"] += shared
        self._prefix = (shared, [(layer.keys, layer.values) for layer in _cache_of(out).layers])

    def _prefill(self, group: list[_Unit]) -> _Rows:
        shared = self._prefix[0] if self._prefix else 0
        width = max(len(u.prompt) for u in group) - shared
        ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, unit in enumerate(group):
            own = unit.prompt[shared:]
            ids[row, width - len(own):] = torch.tensor(own, dtype=torch.long)
            mask[row, width - len(own):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0) + shared
        cache = self._new_cache([c for u in group for c in u.chains])
        if self._prefix:  # the shared prefix's keys and values, copied for every row
            for i, (k, v) in enumerate(self._prefix[1]):
                cache.update(k.expand(len(group), -1, -1, -1).contiguous(),
                             v.expand(len(group), -1, -1, -1).contiguous(), i)
            mask = torch.cat([mask.new_ones((len(group), shared)), mask], dim=1)
        ids, mask, pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
        self.stats["prefill_calls"] += 1
        self.stats["prefill_tokens"] += sum(len(u.prompt) - shared for u in group)
        self.stats["padded_prefill_tokens"] += width * len(group)
        kwargs: dict[str, Any] = {"input_ids": ids, "position_ids": pos, "use_cache": True,
                                  "logits_to_keep": 1, self.cache_kw: cache}
        if len(group) > 1 or shared:
            kwargs["attention_mask"] = mask
        out = self.model(**kwargs)
        cache = _cache_of(out)
        rows = [r for r, u in enumerate(group) for _ in u.chains]
        chains = [c for u in group for c in u.chains]
        index = torch.tensor(rows, device=self.device)
        if rows != list(range(len(group))):
            cache.batch_select_indices(index)
        self._verify(out.logits[index, -1:], chains, [[] for _ in chains])
        live = [j for j, c in enumerate(chains) if c.finish is None]
        positions = torch.tensor([c.n_prompt for c in chains], device=self.device)
        keep = torch.tensor(live, device=self.device)
        if len(live) < len(chains):
            cache.batch_select_indices(keep)
        return cache, mask[index][keep], positions[keep], [chains[j] for j in live]

    # -- tokens -------------------------------------------------------------------------------
    def _push(self, chain: _Chain, tok: int) -> None:
        chain.out.append(tok)
        if chain.lookup is not None:
            chain.lookup.extend([tok])
        if chain.shadow:
            hit = chain.shadow[0] == tok
            chain.agree = (1 - _AGREE_RATE) * chain.agree + _AGREE_RATE * hit
            chain.shadow = chain.shadow[1:] if hit else []
        if tok in self.eos:
            chain.finish = "stop"
        elif chain.max_stop and self._hit_stop(chain):
            chain.finish = "stop"
        elif len(chain.out) >= chain.config.max_tokens:
            chain.finish = "length"

    def _drafts(self, active: list[_Chain]) -> list[list[int]]:
        """Each greedy row's prompt-lookup draft for this step, cut to the width that pays
        (harness.backends.prompt_lookup.choose_width); all empty for a plain step."""
        cap = draft_cap(sum(1 for c in active if c.drafts), self.prompt_lookup, self.packed)
        drafts: list[list[int]] = []
        for c in active:
            room = c.config.max_tokens - len(c.out)  # drafting past the budget is wasted work
            k = min(cap, room - 1) if c.drafts else 0
            if k <= 0:
                drafts.append([])
                continue
            if c.lookup is None:
                c.lookup = NgramIndex(c.prompt + c.out)
            drafts.append(c.lookup.draft(k))
        width = choose_width(drafts, [c.agree for c in active], self.packed)
        for c, d in zip(active, drafts, strict=True):
            if d and not c.shadow:
                c.shadow = list(d)  # checked against the coming tokens, sent or not
        return [d[:width - 1] for d in drafts]

    def _verify(self, logits: torch.Tensor, active: list[_Chain], drafts: list[list[int]]) -> list[int]:
        """Each row's tokens from logits [rows, width, vocab]: the prefix of its draft that its
        decoding agrees with (the argmax, or the sample at the chain's next uniform number), then
        its own next token (all of a plain step or a prefill, where drafts are empty); returns
        how many of each row's new cache columns are real (its input token and the accepted draft)."""
        logits = logits.float()
        greedy = logits.argmax(dim=-1).tolist()  # [rows][width]
        sampled = [r for r, c in enumerate(active) if c.config.temperature > 0]
        cdfs: dict[int, torch.Tensor] = {}
        if sampled:
            rows, width = len(sampled), logits.shape[1]
            configs = [active[r].config for r in sampled for _ in range(width)]
            flat = _cdf(logits[sampled].reshape(rows * width, -1), configs).reshape(rows, width, -1)
            cdfs = {r: flat[i] for i, r in enumerate(sampled)}
        kept: list[int] = []
        for row, (chain, draft) in enumerate(zip(active, drafts, strict=True)):
            if draft:
                chain.shadow = list(draft)  # the sent draft is what the coming tokens are checked against
            agreed = 0
            for col in range(len(draft) + 1):  # one uniform number per kept token, no more
                tok = _draw(cdfs[row][col], chain.generator) if row in cdfs else greedy[row][col]
                self._push(chain, int(tok))
                if chain.finish is not None or col == len(draft) or tok != draft[col]:
                    break
                agreed += 1
            if draft:
                chain.shadow = []
            self.stats["drafted_tokens"] += len(draft)
            self.stats["accepted_tokens"] += agreed
            kept.append(1 + agreed)
        return kept

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


def _cdf(logits: torch.Tensor, configs: Sequence[GenerationConfig]) -> torch.Tensor:
    """The cumulative sampling distribution of each row (temperature, then top-p), in float64 so
    that a rare token keeps its share of [0, 1) after ~50k additions."""
    temps = torch.tensor([c.temperature for c in configs], dtype=logits.dtype, device=logits.device)
    probs = torch.softmax(logits / temps[:, None], dim=-1)
    top_p = torch.tensor([c.top_p for c in configs], dtype=probs.dtype, device=probs.device)
    if bool((top_p < 1.0).any()):
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p[:, None]  # keeps at least one token
        probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
    return probs.double().cumsum(-1)


def _draw(cdf: torch.Tensor, generator: torch.Generator | None) -> int:
    """The token at the next uniform number of the chain's stream (the global one without a seed)."""
    u = torch.rand((), dtype=torch.float64, generator=generator, device=cdf.device) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), cdf.shape[-1] - 1)
