"""A KV cache whose layers write into preallocated buffers, for the hf decode loop.

transformers' DynamicLayer appends each step's keys and values with `torch.cat`, which copies the
whole cache every step: for a 3,000-token transcript at batch 3 that is ~0.5 GB of copying per
token on the default model, about a third of a decode step on CPU. StaticCache avoids the copy
but attends over its full preallocated length and cannot drop or add rows. Here each layer keeps
a buffer with room for the tokens still to come (grown by doubling when a chain outlives it) and
exposes the filled part as a view, so a step writes one column, and the decode loop can still
select rows, append rows and trim leading padding.

Only for models whose layers are all full attention (sliding-window and linear-attention layers
keep transformers' own cache classes).

The row operations of the decode loop work on either kind of cache with its attention mask
([rows, columns], 1 = a real token): append rows, drop the leading columns every row pads, and
squeeze out the masked columns that rejected drafts leave inside rows.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

# Rejected draft columns stay in the cache, masked, until they are this share of its width.
HOLE_SHARE = 0.25
HOLE_SLACK = 32


class BufferLayer(DynamicLayer):
    """`keys`/`values` are views of the first `rows` rows and `filled` columns of `_k`/`_v`
    [row room, heads, capacity, dim]. A step writes its columns in place; a row that leaves is
    overwritten by the rows after it, and rows that join go into the room it left when they are
    no longer than the rows there (the usual case: prompts are taken longest first), so neither
    copies the whole cache."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve = max(1, int(reserve))
        self.filled = 0
        self.rows = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def _alloc(self, like: torch.Tensor, rows: int, capacity: int) -> torch.Tensor:
        return like.new_empty((rows, like.shape[1], capacity, like.shape[3]))

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._k is not None and self._v is not None
        keys, values = self._k[:self.rows, :, :self.filled], self._v[:self.rows, :, :self.filled]
        self.keys, self.values = keys, values
        return keys, values

    def assign(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the contents (after rows were merged); room for `reserve` more columns."""
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        rows, n = keys.shape[0], keys.shape[2]
        self._k, self._v = self._alloc(keys, rows, n + self.reserve), self._alloc(values, rows, n + self.reserve)
        self._k[:, :, :n] = keys
        self._v[:, :, :n] = values
        self.filled, self.rows = n, rows
        self._views()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self._k is None or self._v is None:
            self.assign(key_states, value_states)
            return self._views()
        n = key_states.shape[2]
        if self.filled + n > self._k.shape[2]:  # a chain outlived the reserve: double
            capacity = max(2 * self._k.shape[2], self.filled + n)
            k, v = self._alloc(self._k, self.rows, capacity), self._alloc(self._v, self.rows, capacity)
            k[:, :, :self.filled] = self._k[:self.rows, :, :self.filled]
            v[:, :, :self.filled] = self._v[:self.rows, :, :self.filled]
            self._k, self._v = k, v
        self._k[:self.rows, :, self.filled:self.filled + n] = key_states
        self._v[:self.rows, :, self.filled:self.filled + n] = value_states
        self.filled += n
        return self._views()

    def merge(self, other: Any, pad_self: int, pad_other: int) -> None:
        """Append `other`'s rows, each side left-padded in time with zeros: into the free rows
        when this side needs no padding, else both sides into one new buffer."""
        assert self._k is not None and self._v is not None
        keys, values = self._views()
        width = keys.shape[2] + pad_self
        rows, joining = self.rows, other.keys.shape[0]
        if pad_self == 0 and rows + joining <= self._k.shape[0]:
            for buf, theirs in ((self._k, other.keys), (self._v, other.values)):
                buf[rows:rows + joining, :, :pad_other].zero_()
                buf[rows:rows + joining, :, pad_other:width] = theirs
            self.rows = rows + joining
            self._views()
            return
        out: list[torch.Tensor] = []
        for mine, theirs in ((keys, other.keys), (values, other.values)):
            buf = self._alloc(mine, rows + joining, width + self.reserve)
            buf[:rows, :, :pad_self].zero_()
            buf[:rows, :, pad_self:width] = mine
            buf[rows:, :, :pad_other].zero_()
            buf[rows:, :, pad_other:width] = theirs
            out.append(buf)
        self._k, self._v = out
        self.filled, self.rows = width, rows + joining
        self._views()

    def get_seq_length(self) -> int:
        return self.filled

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._k is None or self._v is None:
            return
        chosen = [int(i) for i in indices.tolist()]
        if all(a < b for a, b in itertools.pairwise(chosen)):
            # rows in order, some left: move the later rows up, in place (filled columns only)
            for to, frm in enumerate(chosen):
                if frm != to:
                    self._k[to, :, :self.filled] = self._k[frm, :, :self.filled]
                    self._v[to, :, :self.filled] = self._v[frm, :, :self.filled]
        else:  # rows repeated or reordered (a prompt's chains): a new buffer
            k = self._alloc(self._k, len(chosen), self._k.shape[2])
            v = self._alloc(self._v, len(chosen), self._v.shape[2])
            k[:, :, :self.filled] = self._k[indices, :, :self.filled]
            v[:, :, :self.filled] = self._v[indices, :, :self.filled]
            self._k, self._v = k, v
        self.rows = len(chosen)
        self._views()

    def drop_front(self, n: int) -> None:
        """Forget the first `n` columns (padding every row has); the buffer's room is kept."""
        if n <= 0 or self._k is None or self._v is None:
            return
        self._k, self._v = self._k[:, :, n:], self._v[:, :, n:]
        self.filled -= n
        self._views()


class BufferCache(DynamicCache):
    """A DynamicCache of BufferLayers (the model creates one layer per decoder layer on first use)."""

    def __init__(self, reserve: int) -> None:
        Cache.__init__(self, layer_class_to_replicate=lambda: BufferLayer(reserve))  # type: ignore[arg-type]


def supports_buffers(model: Any) -> bool:
    """Whether every decoder layer is plain full attention (no sliding window, no linear attention)."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if getattr(text, "sliding_window", None) or getattr(text, "attention_chunk_size", None):
        return False
    types = getattr(text, "layer_types", None)
    return types is None or all(t == "full_attention" for t in types)


def set_layer(layer: Any, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Put `keys`/`values` into a cache layer of either kind."""
    if isinstance(layer, BufferLayer):
        layer.assign(keys, values)
    else:
        layer.keys, layer.values = keys, values


def drop_front(layer: Any, n: int) -> None:
    if isinstance(layer, BufferLayer):
        layer.drop_front(n)
    else:
        layer.keys, layer.values = layer.keys[:, :, n:], layer.values[:, :, n:]


def _left_pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def merge_rows(cache: Any, mask: torch.Tensor, new_cache: Any, new_mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Append the rows of `new_cache` to `cache`, left-padding the shorter one in time."""
    width = max(mask.shape[1], new_mask.shape[1])
    pad_old, pad_new = width - mask.shape[1], width - new_mask.shape[1]
    for old, new in zip(cache.layers, new_cache.layers, strict=True):
        if isinstance(old, BufferLayer):
            old.merge(new, pad_old, pad_new)
            continue
        set_layer(old, torch.cat([_left_pad(old.keys, pad_old, 2), _left_pad(new.keys, pad_new, 2)]),
                  torch.cat([_left_pad(old.values, pad_old, 2), _left_pad(new.values, pad_new, 2)]))
    return cache, torch.cat([_left_pad(mask, pad_old, 1), _left_pad(new_mask, pad_new, 1)])


def copy_rows(cache: Any, index: torch.Tensor, into: Any) -> Any:
    """`into` (an empty cache) holding copies of the rows `index` of `cache`, which is unchanged."""
    for i, layer in enumerate(cache.layers):
        into.update(layer.keys[index], layer.values[index], i)
    return into


def trim_front(cache: Any, mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Drop the leading columns that every row pads (left after the longest rows finished)."""
    real = mask.any(dim=0).nonzero()
    first = int(real[0]) if len(real) else 0
    if first > 0:
        for layer in cache.layers:
            drop_front(layer, first)
        mask = mask[:, first:]
    return cache, mask


def compact_holes(cache: Any, mask: torch.Tensor) -> tuple[Any, torch.Tensor, bool]:
    """Squeeze out masked columns once they are a fair share of the cache (HOLE_SHARE, HOLE_SLACK):
    each row keeps its real columns in order, left-padded to the longest row. The flag says
    whether it did."""
    longest = int(mask.sum(dim=1).max())
    if mask.shape[1] - longest <= max(HOLE_SLACK, HOLE_SHARE * mask.shape[1]):
        return cache, mask, False
    cols = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    # real columns sort after the padding ones, each group in its own order
    order = torch.argsort(mask.to(torch.long) * mask.shape[1] + cols, dim=1)[:, -longest:]
    for layer in cache.layers:
        index = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
        set_layer(layer, layer.keys.gather(2, index), layer.values.gather(2, index))
    return cache, mask.gather(1, order), True
