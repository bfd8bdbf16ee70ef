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


def test_rows_leave_and_join_in_place_in_the_buffer() -> None:
    """A row that leaves is overwritten by the later rows; a row no longer than the others joins
    in the room it left, without a new buffer; a longer one, or repeated rows, get a new one."""
    keys = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 3, 1).contiguous()
    cache = _cache("buffer", keys)
    layer = cache.layers[0]
    storage = layer._k.data_ptr()
    cache.batch_select_indices(torch.tensor([0, 2, 3]))  # row 1 leaves
    assert layer._k.data_ptr() == storage and layer.keys[:, 0, :, 0].tolist() == [[0] * 3, [2] * 3, [3] * 3]
    joining = _cache("buffer", torch.full((1, 1, 2, 1), 9.0))
    mask = torch.ones(3, 3, dtype=torch.long)
    cache, mask = merge_rows(cache, mask, joining, torch.ones(1, 2, dtype=torch.long))
    assert layer._k.data_ptr() == storage  # into the free row
    assert mask.tolist()[-1] == [0, 1, 1] and layer.keys[:, 0, :, 0].tolist()[-1] == [0, 9, 9]
    assert torch.equal(cache.layers[1].values, -cache.layers[1].keys)
    keys_now, _ = layer.update(torch.full((4, 1, 1, 1), 5.0), torch.zeros(4, 1, 1, 1))
    assert keys_now[:, 0, -1, 0].tolist() == [5.0] * 4 and keys_now[3, 0, :, 0].tolist() == [0, 9, 9, 5]
    cache.layers[1].update(torch.full((4, 1, 1, 1), 6.0), torch.full((4, 1, 1, 1), -6.0))
    mask = torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], dim=1)
    cache.batch_select_indices(torch.tensor([3, 3, 0]))  # repeated rows: a new buffer
    assert layer._k.data_ptr() != storage
    assert layer.keys[:, 0, :, 0].tolist() == [[0, 9, 9, 5], [0, 9, 9, 5], [0, 0, 0, 5]]
    longer = _cache("buffer", torch.full((1, 1, 6, 1), 4.0))
    before = layer._k.data_ptr()
    cache, mask = merge_rows(cache, mask[[3, 3, 0]], longer, torch.ones(1, 6, dtype=torch.long))
    assert layer._k.data_ptr() != before and layer.keys.shape[:3] == (4, 1, 6)
    assert layer.keys[:, 0, :, 0].tolist()[0] == [0, 0, 0, 9, 9, 5] and mask.tolist()[0] == [0, 0, 0, 1, 1, 1]
