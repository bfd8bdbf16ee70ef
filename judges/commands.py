"""What `harness judge ...` does, as functions a user can also call: build the judge, judge,
write the files beside the runs, import into the store, and return the text to print."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from judges.judge import Judge, JudgeConfig, Progress
from judges.pairs import LLMPairJudge
from judges.results import import_results
from leaderboard.store import GenericResult

# (description, total) -> a progress bar with update(n) and close(); None = no progress.
ProgressFactory = Callable[[str, int, int], Any]


@contextmanager
def _bar(factory: ProgressFactory | None, desc: str, total: int) -> Iterator[Progress | None]:
    if factory is None:
        yield None
        return
    bar = factory(desc, total, 0)
    try:
        yield bar.update
    finally:
        bar.close()


def _store(store: str | None, results: Sequence[GenericResult]) -> str:
    if not store:
        return ""
    added = import_results(store, results)
    return f"store: {added} new result(s) of {len(results)} in {store}\n"


def pointwise(run: Path, config: JudgeConfig, *, prompt: str | Path = "pointwise", tasks: Sequence[str] = (),
              reference: bool = False, store: str | None = None, progress: ProgressFactory | None = None) -> str:
    from judges.pointwise import run_pointwise, write_pointwise
    from judges.runs import load_run

    judged = load_run(run, tasks)
    with Judge.create(config, prompt) as judge, _bar(progress, "judge pointwise", len(judged.outputs)) as tick:
        report = run_pointwise(judged, judge, reference=reference, progress=tick)
    path = write_pointwise(report)
    return report.markdown() + f"\nresults: {path}\n" + _store(store, report.results)


def pairwise(run_a: Path, run_b: Path, config: JudgeConfig, *, prompt: str | Path = "pairwise",
             tasks: Sequence[str] = (), store: str | None = None, progress: ProgressFactory | None = None) -> str:
    from judges.pairwise import run_pairwise, write_pairwise
    from judges.runs import load_run

    a, b = load_run(run_a, tasks), load_run(run_b, tasks)
    with Judge.create(config, prompt) as judge, _bar(progress, "judge pairwise", 2 * len(a.outputs)) as tick:
        report = run_pairwise(a, b, LLMPairJudge(judge), tick)
    path = write_pairwise(report)
    return report.markdown() + f"\nresults: {path}\n" + _store(store, report.results)


def rank(runs: Sequence[Path], config: JudgeConfig, *, prompt: str | Path = "pairwise", tasks: Sequence[str] = (),
         output: Path | None = None, seed: int = 0, rounds: int = 1000, store: str | None = None,
         progress: ProgressFactory | None = None) -> str:
    from judges.ranking import rank_runs, write_rank
    from judges.runs import load_run

    judged = [load_run(r, tasks) for r in runs]
    n = len(judged)
    total = 2 * len(judged[0].outputs) * n * (n - 1) // 2
    with Judge.create(config, prompt) as judge, _bar(progress, "judge battles", total) as tick:
        report = rank_runs(judged, LLMPairJudge(judge), output=output, seed=seed, rounds=rounds, progress=tick)
    path = write_rank(report)
    pair_results = [r for p in report.pairs for r in p.results]
    return (report.markdown() + f"\nresults: {path}\n" + _store(store, report.results)
            + (_store(store, pair_results) if store else ""))


def calibrate(dataset: str, data_dir: Path, config: JudgeConfig | None, *, prompt: str | Path = "pairwise",
              limit: int | None = None, seed: int = 0, output: Path | None = None,
              progress: ProgressFactory | None = None) -> str:
    """config None: the baselines alone (no model)."""
    from judges.calibration import calibrate as study
    from judges.calibration import load_dataset, write_calibration

    if config is None:
        report = study(dataset, data_dir, None, limit=limit, seed=seed)
    else:
        n = len(load_dataset(dataset, data_dir, limit)[1])
        with Judge.create(config, prompt) as judge, _bar(progress, f"judge {dataset}", 2 * n) as tick:
            report = study(dataset, data_dir, LLMPairJudge(judge), limit=limit, seed=seed, progress=tick)
    folder = write_calibration(report, output)
    return report.markdown() + f"\nwritten: {folder / 'calibration.md'}, {folder / 'calibration.json'}\n"
