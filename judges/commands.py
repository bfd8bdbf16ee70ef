"""What `harness judge ...` does, as functions a user can also call: build the judge, judge,
write the files beside the runs, import into the store, and return the text to print (for
pointwise, pairwise, rank and rubric: a `Judged`, which also carries the tokens per judge model
and where their cost file goes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.scoring.cost import RoleUsage
from judges.judge import Judge, JudgeConfig, Progress
from judges.pairs import LLMPairJudge
from judges.results import import_results, merge_usage, sidecar, tokens_markdown, write_tokens
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


@dataclass(frozen=True)
class Judged:
    """A judge command's outcome: the text to print, the tokens in and out per judge model
    (already in `results`' X.tokens.json) and the results file X.json, beside which a priced
    cost goes (X.cost.json: `harness judge ... --price-table FILE`)."""

    text: str
    usage: tuple[RoleUsage, ...]
    results: Path

    @property
    def cost_path(self) -> Path:
        return sidecar(self.results, "cost")


def _judged(text: str, usage: Sequence[RoleUsage], results: Path) -> Judged:
    return Judged(text + tokens_markdown(usage) + f"tokens: {sidecar(results, 'tokens')}\n", tuple(usage), results)


def _store(store: str | None, results: Sequence[GenericResult]) -> str:
    if not store:
        return ""
    added = import_results(store, results)
    return f"store: {added} new result(s) of {len(results)} in {store}\n"


def pointwise(run: Path, config: JudgeConfig, *, prompt: str | Path = "pointwise", tasks: Sequence[str] = (),
              reference: bool = False, store: str | None = None, progress: ProgressFactory | None = None) -> Judged:
    from judges.pointwise import run_pointwise, write_pointwise
    from judges.runs import load_run

    judged = load_run(run, tasks)
    with Judge.create(config, prompt) as judge, _bar(progress, "judge pointwise", len(judged.outputs)) as tick:
        report = run_pointwise(judged, judge, reference=reference, progress=tick)
    path = write_pointwise(report)
    return _judged(report.markdown() + f"\nresults: {path}\n" + _store(store, report.results), report.usage, path)


def pairwise(run_a: Path, run_b: Path, config: JudgeConfig, *, prompt: str | Path = "pairwise",
             tasks: Sequence[str] = (), store: str | None = None, progress: ProgressFactory | None = None) -> Judged:
    from judges.pairwise import run_pairwise, write_pairwise
    from judges.runs import load_run

    a, b = load_run(run_a, tasks), load_run(run_b, tasks)
    with Judge.create(config, prompt) as judge, _bar(progress, "judge pairwise", 2 * len(a.outputs)) as tick:
        report = run_pairwise(a, b, LLMPairJudge(judge), tick)
    path = write_pairwise(report)
    return _judged(report.markdown() + f"\nresults: {path}\n" + _store(store, report.results), report.usage, path)


def rank(runs: Sequence[Path], config: JudgeConfig, *, prompt: str | Path = "pairwise", tasks: Sequence[str] = (),
         output: Path | None = None, seed: int = 0, rounds: int = 1000, store: str | None = None,
         progress: ProgressFactory | None = None, style_control: bool = False) -> Judged:
    """`style_control`: also fit Bradley–Terry with style covariates (judges.style) on the same
    battles; raw and controlled ratings and the coefficients go to style_control.{md,json}. The
    tokens are the sum over the pairs (each pair's own are in its pairwise-<id>.tokens.json)."""
    from judges.ranking import rank_runs, write_rank
    from judges.runs import load_run

    judged = [load_run(r, tasks) for r in runs]
    n = len(judged)
    total = 2 * len(judged[0].outputs) * n * (n - 1) // 2
    with Judge.create(config, prompt) as judge, _bar(progress, "judge battles", total) as tick:
        report = rank_runs(judged, LLMPairJudge(judge), output=output, seed=seed, rounds=rounds, progress=tick)
    path = write_rank(report)
    usage = merge_usage(u for p in report.pairs for u in p.usage)
    write_tokens(path, usage)
    pair_results = [r for p in report.pairs for r in p.results]
    styled = ""
    if style_control:
        from judges.results import write_json
        from judges.style import style_control_for_rank

        sc = style_control_for_rank(report, rounds=rounds, seed=seed)
        labels = {r.model_fingerprint: f"{r.model_name} [{r.path.name}]" for r in report.runs}
        table = ("\nStyle control (Bradley–Terry with length, header, list and bold covariates, as Chatbot Arena; "
                 f"{sc.n_battles} battles, {rounds} bootstrap rounds)\n\n" + sc.markdown(labels))
        write_json(report.folder / "style_control.json", {**sc.to_json(), "labels": labels})
        (report.folder / "style_control.md").write_text(table.lstrip("\n"), encoding="utf-8")
        styled = table + f"\nstyle control: {report.folder / 'style_control.json'}\n"
    return _judged(report.markdown() + styled + f"\nresults: {path}\n" + _store(store, report.results)
                   + (_store(store, pair_results) if store else ""), usage, path)


def _store_study(store: str | None, results: Sequence[GenericResult]) -> str:
    """--store for a calibration study: its grader's numbers (kind "calibration"), or why not."""
    if not store:
        return ""
    if not results:
        return ("store: nothing stored: a baselines-only study has no judge or grader whose results the "
                "leaderboard could show it beside\n")
    return _store(store, results)


def calibrate(dataset: str, data_dir: Path, config: JudgeConfig | None, *, prompt: str | Path | None = None,
              limit: int | None = None, seed: int = 0, output: Path | None = None,
              progress: ProgressFactory | None = None, store: str | None = None) -> str:
    """config None: the baselines alone (no model). `prompt` None: the study's default (pairwise,
    or the rubric grader for the HealthBench meta-evaluation). `store`: also store the judge's
    (grader's) headline numbers in that results store (kind "calibration"), where the leaderboard
    shows them beside every result of the same judge fingerprint; a baselines-only study stores
    nothing."""
    from judges.healthbench_rows import META_DATASETS

    if dataset in META_DATASETS:
        return calibrate_rubric_grader(dataset, data_dir, config, prompt=prompt, limit=limit, seed=seed,
                                       output=output, progress=progress, store=store)
    from judges.calibration import calibrate as study
    from judges.calibration import calibration_results, load_dataset, write_calibration

    if config is None:
        report = study(dataset, data_dir, None, limit=limit, seed=seed)
    else:
        n = len(load_dataset(dataset, data_dir, limit)[1])
        with Judge.create(config, prompt or "pairwise") as judge, _bar(progress, f"judge {dataset}", 2 * n) as tick:
            report = study(dataset, data_dir, LLMPairJudge(judge), limit=limit, seed=seed, progress=tick)
    folder = write_calibration(report, output)
    settings = {"limit": limit, "seed": seed, "prompt": None if prompt is None else str(prompt)}
    results = calibration_results(report, settings, str((folder / "calibration.json").resolve()))
    return (report.markdown() + f"\nwritten: {folder / 'calibration.md'}, {folder / 'calibration.json'}\n"
            + _store_study(store, results))


def calibrate_rubric_grader(dataset: str, data_dir: Path, config: JudgeConfig | None, *,
                            prompt: str | Path | None = None, limit: int | None = None, seed: int = 0,
                            output: Path | None = None, progress: ProgressFactory | None = None,
                            store: str | None = None) -> str:
    """A rubric grader (the config's model with a grader prompt) against HealthBench's physicians;
    with config None, the baselines and the physician ceiling alone. `store`: as `calibrate`."""
    from judges.healthbench_meta import calibration_results, run_meta_study, write_meta
    from judges.healthbench_rows import load_meta
    from judges.rubric_grader import LLMRubricGrader, load_grader_prompt

    ds, rows = load_meta(dataset, data_dir, limit, require_texts=config is not None)
    if config is None:
        report = run_meta_study(ds.name, ds.description, ds.path, rows, None, seed=seed)
    else:
        with LLMRubricGrader.create(config, load_grader_prompt(prompt)) as grader, \
                _bar(progress, f"grade {dataset}", len(rows)) as tick:
            report = run_meta_study(ds.name, ds.description, ds.path, rows, grader, seed=seed, progress=tick)
    fp = (report.grader_info or {}).get("fingerprint", "baselines")
    folder = write_meta(report, output or Path("runs") / "calibration" / f"{ds.name}-{fp[:12]}-n{len(rows)}")
    settings = {"limit": limit, "seed": seed, "prompt": None if prompt is None else str(prompt)}
    results = calibration_results(report, settings, str((folder / "calibration.json").resolve()))
    return (report.markdown() + f"\nwritten: {folder / 'calibration.md'}, {folder / 'calibration.json'}\n"
            + _store_study(store, results))


def rubric_jury(runs: Sequence[Path], configs: Sequence[JudgeConfig], *, prompt: str | Path | None = None,
                tasks: Sequence[str] = (), partial: bool = False, output: Path | None = None,
                progress: ProgressFactory | None = None) -> Judged:
    """Each config's model grades the runs' stored rubric responses; the jury of them. Tokens
    per grader model (roles judge, judge_2, ... in the order of `configs`) in jury.tokens.json."""
    from contextlib import ExitStack

    from judges.results import write_json
    from judges.rubric_grader import LLMRubricGrader, load_grader_prompt
    from judges.rubric_jury import jury_grade, read_rubric_run

    grader_prompt = load_grader_prompt(prompt)
    n = sum(len(ex.items) for r in runs for ex in read_rubric_run(r, tasks)[2])
    with ExitStack() as stack:
        graders = [stack.enter_context(LLMRubricGrader.create(c, grader_prompt)) for c in configs]
        with _bar(progress, "grade rubric items", n * len(graders)) as tick:
            jury = jury_grade(runs, graders, tasks=tasks, partial=partial, progress=tick)
    folder = output or Path("runs") / f"jury-{jury.fingerprint[:12]}"
    path = write_json(folder / "jury.json", jury.to_json())
    (folder / "jury.md").write_text(jury.markdown(), encoding="utf-8")
    write_tokens(path, jury.usage)
    return _judged(jury.markdown() + f"\nwritten: {folder / 'jury.md'}, {path}\n", jury.usage, path)
