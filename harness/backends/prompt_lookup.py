"""Draft tokens for prompt-lookup (n-gram) speculative decoding.

On a CPU a decode step of the default model reads all of its weights for a handful of rows, so
checking several tokens of one row in one forward pass costs little more than one token. The
draft is what followed the most recent earlier occurrence of the chain's last n tokens, in the
prompt or in its own output: notes copy the transcript, answers quote the question, and a chain
stuck in a loop repeats itself. The model checks the draft and keeps its longest prefix that
decoding would have produced (the argmax, or for a sampled chain the token its next random
number picks: harness.backends.hf_generate), plus its own next token, so the tokens are the same
as one-token steps (the same technique as transformers' `prompt_lookup_num_tokens` and vLLM's
`ngram` speculative decoding; written here because the loop is our own continuous-batching one).
"""

from __future__ import annotations

# n-gram sizes tried, longest first: a 1-gram matches too often to be worth a forward pass.
SIZES = (3, 2)


class NgramIndex:
    """For each n-gram of a growing token sequence, where its most recent continuation starts."""

    def __init__(self, tokens: list[int], sizes: tuple[int, ...] = SIZES) -> None:
        self.seq: list[int] = []
        self.sizes = sizes
        self.next: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in sizes}
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        for tok in tokens:
            p = len(self.seq)  # `tok` continues every n-gram that ends at p - 1
            for n in self.sizes:
                if p >= n:
                    self.next[n][tuple(self.seq[p - n:p])] = p
            self.seq.append(tok)

    def draft(self, k: int) -> list[int]:
        """Up to k tokens that followed the last n-gram before (empty when it never occurred)."""
        if k <= 0:
            return []
        for n in self.sizes:
            if len(self.seq) <= n:
                continue
            start = self.next[n].get(tuple(self.seq[-n:]))
            if start is not None:
                return self.seq[start:start + k]
        return []


def draft_cap(rows: int, limit: int, packed: bool = False) -> int:
    """Most draft tokens per row for a step with `rows` drafting rows: a verify pass of at most 16
    token rows with torch's kernels, past which a CPU step grows steeply, or 32 with packed ones."""
    most = 32 if packed else 16
    return max(0, min(limit, most // max(rows, 1) - 1))


def step_cost(token_rows: int, packed: bool = False) -> float:
    """Time of a decode step feeding `token_rows` tokens, in one-row steps, fitted to the default
    model on the 2-core CPUs (`python benchmarks/decode_step_cost.py`: float32, 1 thread,
    250-token context), a little pessimistic there. On a GPU, where steps cost about the same up
    to many rows, it is more so: it drafts less than it could, never wrongly.

    - `packed` (harness.backends.cpu_linear: oneDNN weights for calls of PACKED_ROWS rows, torch's
      kernels below; Xeon with AVX-512), against a 52 ms one-row step: 2 token rows 1.03-1.05,
      3 rows 1.15, 4 rows 1.24-1.28, 8 rows 1.58, 12 rows 1.85, 16 rows 2.11, 24 rows 2.71,
      32 rows 2.99. oneDNN reads the weights once whatever the rows. On AVX2 only (EPYC;
      packed from 2 rows; `decode_step_cost.py --steps 9`), against a 58 ms one-row step: 2
      token rows 1.06-1.19, 4 rows 1.31-1.45, 8 rows 1.65, 3 rows 1.61 in that run (that
      machine's neighbours add 10-30 % noise): close to the same curve.
    - torch's kernels (EPYC with AVX2): 1 row 94 ms, 3 rows 178 ms, 8 rows 206 ms, as MKL reads
      the weights as a vector product for one row and repacks them for more; 1 row + 10 drafts
      191 ms, 3 rows + 4 drafts 305 ms, 8 rows + 1 draft 319 ms.
    """
    if token_rows <= 1:
        return 1.0
    if packed:
        if token_rows <= 3:
            return 1.0 + 0.08 * (token_rows - 1)
        return 1.12 * (1.04 + 0.06 * (token_rows - 1))
    if token_rows <= 8:
        return 1.4 + 0.05 * token_rows
    return 1.8 + 0.16 * (token_rows - 8)


def expected_accepted(k: int, agree: float) -> float:
    """Draft tokens expected to be kept when each is kept with probability `agree` given the
    previous one was (the prefix rule)."""
    return sum(agree ** j for j in range(1, k + 1))


def choose_width(drafts: list[list[int]], agree: list[float], packed: bool = False, margin: float = 1.05) -> int:
    """Tokens per row to feed this step (1: no drafting): the width that yields the most tokens
    per unit of step cost, if it beats a plain step by `margin`."""
    rows = len(drafts)
    longest = max((len(d) for d in drafts), default=0)
    base = rows / step_cost(rows, packed)
    best, best_rate = 1, base * margin
    for width in range(2, longest + 2):
        gain = sum(expected_accepted(min(len(d), width - 1), a) for d, a in zip(drafts, agree, strict=True))
        rate = (rows + gain) / step_cost(rows * width, packed)
        if rate > best_rate:
            best, best_rate = width, rate
    return best
