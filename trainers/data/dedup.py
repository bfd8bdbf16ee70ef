"""De-duplication: exact (hash of the normalised text) and near-duplicate (MinHash LSH from
`datasketch`). The first occurrence is kept, so the order of the inputs decides which copy stays."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

from trainers.data.config import DedupSpec
from trainers.data.quality import tokens

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """NFKC, lower case, punctuation and runs of white space collapsed to one space."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_WORD.sub(" ", text).strip()


def exact_key(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def shingles(text: str, n: int) -> set[bytes]:
    toks = tokens(text)
    if len(toks) <= n:
        return {" ".join(toks).encode("utf-8")}
    return {" ".join(toks[i:i + n]).encode("utf-8") for i in range(len(toks) - n + 1)}


def duplicates(texts: Sequence[str], spec: DedupSpec, seed: int = 1) -> dict[int, tuple[str, int]]:
    """Index of each dropped text -> ("exact" | "near", index of the kept text it repeats)."""
    dropped: dict[int, tuple[str, int]] = {}
    if spec.exact:
        seen: dict[str, int] = {}
        for i, text in enumerate(texts):
            key = exact_key(text)
            if key in seen:
                dropped[i] = ("exact", seen[key])
            else:
                seen[key] = i
    if spec.near:
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=spec.threshold, num_perm=spec.num_perm)
        kept: dict[int, MinHash] = {}
        for i, text in enumerate(texts):
            if i in dropped:
                continue
            mh = MinHash(num_perm=spec.num_perm, seed=seed)
            mh.update_batch(list(shingles(text, spec.shingle)))
            # LSH gives candidates; keep only those whose estimated Jaccard reaches the threshold
            match = [j for j in map(int, lsh.query(mh)) if kept[j].jaccard(mh) >= spec.threshold]
            if match:
                dropped[i] = ("near", min(match))
            else:
                lsh.insert(str(i), mh)
                kept[i] = mh
    return dropped
