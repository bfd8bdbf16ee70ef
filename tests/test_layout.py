"""The shape of the code: one folder per pipeline stage, no import cycles, no modules left at
their pre-move paths (the layers themselves are checked by `lint-imports` in CI)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

PACKAGES = ("harness", "judges", "trainers", "leaderboard", "tasks")


def _cycles() -> list[list[str]]:
    grimp = pytest.importorskip("grimp", reason="comes with import-linter (the test extra)")
    graph = grimp.build_graph(*PACKAGES)
    adjacency = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    # Tarjan's strongly connected components: a component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(adjacency):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("old", [
    "harness.runner", "harness.metrics", "harness.textmetrics", "harness.taskspec", "harness.consult",
    "harness.cliutil", "harness.cli_run", "harness.sft", "harness.default_model", "judges.cli",
    "leaderboard.cli", "leaderboard.samples", "trainers.cli",
])
def test_no_module_at_an_old_path(old: str) -> None:
    assert importlib.util.find_spec(old) is None


def test_families_register_themselves() -> None:
    """Every family's objects are found through the registries, with no central table."""
    from harness.data.adapters import ADAPTERS
    from harness.protocols import FORMATS, PROTOCOLS
    from harness.protocols.base import EXTERNAL_TASKS
    from harness.scoring import METRICS

    assert {"ner", "cot", "sc", "voc", "interactive", "pqa", "generate_text", "sft", "loglik"} <= set(PROTOCOLS)
    assert {"ner", "next_turn", "medqa"} <= set(FORMATS)
    assert {"conll_ner", "mediq_consult", "dialogue_turn"} <= set(ADAPTERS)
    assert {"bleu", "ner_f1_strict", "pqa_f1", "accuracy_full_case"} <= set(METRICS)
    assert "lm_eval" in EXTERNAL_TASKS


def test_public_api_is_stable() -> None:
    from harness import RunConfig, Runner
    from harness.cli import main

    assert callable(main) and RunConfig.__name__ == "RunConfig" and Runner.__name__ == "Runner"
