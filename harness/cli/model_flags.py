"""Repeated model flags paired by position, for juries: `--grader-model A --grader-model B` in
`harness run` and `--judge A --judge B` in `harness judge rubric`.

The rule: with N models, a backend flag (or an arguments flag) is given not at all (its default
for every model), once (the same for every model), or N times (the k-th for the k-th model, in
the order given). Any other count is an error naming the flags, never a guess."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class ModelFlags:
    """One model of a jury as its flags gave it: the model ('default' = the embedded model), its
    backend and its backend-arguments text (None: none given)."""

    model: str
    backend: str
    args: str | None


def _spread(values: Sequence[str] | None, n: int, flag: str, model_flag: str) -> list[str | None]:
    given: list[str | None] = list(values or ())
    if not given:
        return [None] * n
    if len(given) == 1:
        return given * n
    if len(given) == n:
        return list(given)
    raise HarnessError(f"{flag} given {len(given)} times for {n} {model_flag}: give it once (for every model) or "
                       f"once per {model_flag}, in the same order")


def pair_model_flags(models: Sequence[str] | None, backends: Sequence[str] | None, args: Sequence[str] | None, *,
                     model_flag: str, backend_flag: str, args_flag: str, default_backend: str = "hf",
                     default_model: str | None = None) -> list[ModelFlags]:
    """The models the flags name, each with its backend and arguments (the rule above). No model
    flag but a backend or arguments flag: one model, `default_model` (None: an error)."""
    names = list(models or ())
    if not names and (backends or args):
        if default_model is None:
            raise HarnessError(f"{backend_flag if backends else args_flag} needs {model_flag}")
        names = [default_model]
    if not names:
        return []
    n = len(names)
    paired_backends = _spread(backends, n, backend_flag, model_flag)
    paired_args = _spread(args, n, args_flag, model_flag)
    return [ModelFlags(m, b or default_backend, a) for m, b, a in zip(names, paired_backends, paired_args, strict=True)]
