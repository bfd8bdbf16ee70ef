"""The decode loop's row operations on a KV cache and its mask (harness/backends/kv_cache.py):
squeezing out the masked columns rejected drafts leave keeps each row's real columns in order,
for transformers' cache and for the buffer cache alike."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from harness.backends import kv_cache
from harness.backends.kv_cache import BufferCache, compact_holes, merge_rows, trim_front


def _cache(kind: str, keys: torch.Tensor) -> DynamicCache:
    cache = BufferCache(4) if kind == "buffer" else DynamicCache()
    for layer in range(2):
        cache.update(keys + layer, -(keys + layer), layer)
    return cache


@pytest.mark.parametrize("kind", ["dynamic", "buffer"])
def test_compact_keeps_each_rows_real_columns_in_order(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # column c of row r holds the value 10 * r + c, so a column's origin can be read back
    rows, cols = 3, 8
    keys = (10 * torch.arange(rows)[:, None] + torch.arange(cols)[None, :]).float()[:, None, :, None]
    mask = torch.tensor([[0, 1, 1, 0, 1, 0, 0, 1],
                         [1, 1, 1, 1, 1, 0, 0, 1],
                         [0, 0, 1, 0, 0, 1, 1, 1]])
    cache = _cache(kind, keys)
    same = compact_holes(cache, mask)
    assert same[2] is False and same[1] is mask  # 2 holes in 8 columns: below the default slack
    monkeypatch.setattr(kv_cache, "HOLE_SLACK", 0)
    monkeypatch.setattr(kv_cache, "HOLE_SHARE", 0.0)
    cache, squeezed, done = compact_holes(cache, mask)
    assert done and squeezed.tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]
    for layer_index, layer in enumerate(cache.layers):
        got = layer.keys[:, 0, :, 0]
        for r in range(rows):
            real = [10 * r + c + layer_index for c in range(cols) if mask[r, c]]
            assert got[r][squeezed[r].bool()].tolist() == real
        assert torch.equal(layer.values, -layer.keys)


@pytest.mark.parametrize("kind", ["dynamic", "buffer"])
def test_merge_left_pads_and_trim_drops_shared_padding(kind: str) -> None:
    old = _cache(kind, torch.ones(2, 1, 3, 1))
    new = _cache(kind, torch.full((1, 1, 5, 1), 2.0))
    cache, mask = merge_rows(old, torch.ones(2, 3, dtype=torch.long), new, torch.ones(1, 5, dtype=torch.long))
    assert mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert cache.layers[0].keys[:, 0, :, 0].tolist() == [[0, 0, 1, 1, 1], [0, 0, 1, 1, 1], [2, 2, 2, 2, 2]]
    cache.batch_select_indices(torch.tensor([0, 1]))  # the long row leaves
    cache, mask = trim_front(cache, mask[:2])
    assert mask.tolist() == [[1, 1, 1]] * 2 and cache.layers[1].keys.shape[2] == 3
    keys, _ = cache.layers[0].update(torch.full((2, 1, 1, 1), 7.0), torch.zeros(2, 1, 1, 1))  # the next step
    assert keys[:, 0, :, 0].tolist() == [[1, 1, 1, 7], [1, 1, 1, 7]]


@pytest.mark.parametrize("kind", ["dynamic", "buffer"])
def test_copy_rows_copies_and_leaves_the_source(kind: str) -> None:
    keys = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 4, 1).contiguous()
    source = _cache(kind, keys)
    copy = kv_cache.copy_rows(source, torch.tensor([2, 0]), BufferCache(4) if kind == "buffer" else DynamicCache())
    assert copy.layers[1].keys[:, 0, 0, 0].tolist() == [3.0, 1.0]  # layer 1 holds keys + 1
    copy.layers[0].keys.add_(100)
    assert source.layers[0].keys[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]
