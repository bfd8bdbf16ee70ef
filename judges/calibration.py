"""Judge calibration studies against human pairwise labels (../shared/data/judge_calibration,
see its MANIFEST.md): LLMBar Natural and Adversarial, and the processed MT-Bench, FairEval and
LLMEval² sets (one gold label each, no ties), and PandaLM's test set (three annotators, ties
allowed; the human label is their majority, a three-way split is a tie).

The judge and the baselines ("always first", "longer wins", "random") go through the same
two-order protocol (judges.pairs) and are scored by judges.agreement; the output is one table
per study, in Markdown and JSON.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from harness.errors import HarnessError
from harness.registry import Registry
from harness.schema import read_json
from harness.scoring.intervals import MetricValue
from harness.types import stable_hash
from judges.agreement import JudgeRow, judge_row, krippendorff_alpha, prefer_longer
from judges.judge import Progress
from judges.pairs import BASELINES, PairJudge, PairOutcome, PairQuery, judge_pairs
from judges.results import fmt, markdown_table, write_json, write_jsonl


@dataclass(frozen=True)
class CalibrationDataset:
    name: str
    path: str  # relative to the data directory
    reader: Literal["llmbar", "pandalm", "human"]  # human: a campaign of `harness annotate` (judges.human)
    description: str


@dataclass(frozen=True)
class CalibrationItem:
    id: str
    request: str
    output_1: str
    output_2: str
    annotations: tuple[int | None, ...]  # per annotator: 1, 2, 0 (tie), or None (did not label this item)

    @property
    def human(self) -> int:
        """The majority of the labels given; no majority (e.g. 1, 2, 0) is a tie."""
        given = [a for a in self.annotations if a is not None]
        if not given:
            raise HarnessError(f"calibration item {self.id}: no annotator labelled it")
        (label, count), *_ = Counter(given).most_common(1)
        return label if count * 2 > len(given) else 0


DATASETS: Registry[CalibrationDataset] = Registry("calibration dataset")
_LLMBAR = "judge_calibration/llmbar"
for _name, _file, _desc in (
    ("llmbar_natural", "natural.json", "LLMBar Natural: 100 instruction-following pairs, expert label"),
    ("llmbar_adversarial_gptinst", "adversarial_gptinst.json", "LLMBar Adversarial GPTInst (92)"),
    ("llmbar_adversarial_gptout", "adversarial_gptout.json", "LLMBar Adversarial GPTOut (47)"),
    ("llmbar_adversarial_manual", "adversarial_manual.json", "LLMBar Adversarial Manual (46)"),
    ("llmbar_adversarial_neighbor", "adversarial_neighbor.json", "LLMBar Adversarial Neighbor (134)"),
    ("mt_bench", "mt_bench.json", "MT-Bench human judgments (200 turn-1 pairs, majority, no ties)"),
    ("faireval", "faireval.json", "FairEval (66 pairs, human labels)"),
    ("llmeval2", "llmeval_2.json", "LLMEval² (200 pairs, human labels)"),
):
    DATASETS.add(_name, CalibrationDataset(_name, f"{_LLMBAR}/{_file}", "llmbar", _desc))
DATASETS.add("pandalm", CalibrationDataset(
    "pandalm", "judge_calibration/pandalm/testset-v1.json", "pandalm",
    "PandaLM test set: 999 pairs, three human annotators (0 = tie)"))


def _read_items(ds: CalibrationDataset, data: Any, where: Path) -> list[CalibrationItem]:
    if not isinstance(data, list):
        raise HarnessError(f"{where}: expected a JSON array")
    items = []
    for k, rec in enumerate(data):
        try:
            if ds.reader == "llmbar":
                label = int(rec["label"])
                if label not in (1, 2):
                    raise ValueError(f"label {label!r} is not 1 or 2")
                items.append(CalibrationItem(f"{ds.name}-{k}", str(rec["input"]), str(rec["output_1"]),
                                             str(rec["output_2"]), (label,)))
            else:
                ann = tuple(int(rec[f"annotator{a}"]) for a in (1, 2, 3))
                if any(a not in (0, 1, 2) for a in ann):
                    raise ValueError(f"annotations {ann} are not in 0, 1, 2")
                request = str(rec["instruction"]) + (f"\n\n{rec['input']}" if rec.get("input") else "")
                items.append(CalibrationItem(f"{ds.name}-{rec.get('idx', k)}", request, str(rec["response1"]),
                                             str(rec["response2"]), ann))
        except (KeyError, TypeError, ValueError) as exc:
            raise HarnessError(f"{where}: record {k}: {exc}") from None
    return items


def load_dataset(name: str, data_dir: Path,
                 limit: int | None = None) -> tuple[CalibrationDataset, list[CalibrationItem]]:
    """The first `limit` items of a registered study, from DATA_DIR/judge_calibration/..."""
    ds = DATASETS.get(name)
    path = Path(data_dir) / ds.path
    if not path.is_file():
        raise HarnessError(f"calibration data {name!r} not found at {path} (pass --data-dir, the folder that "
                           "holds judge_calibration/)")
    data = read_json(path)
    items = _read_items(ds, data, path)
    return ds, items[:limit] if limit is not None else items


@dataclass(frozen=True)
class CalibrationReport:
    dataset: CalibrationDataset
    items: list[CalibrationItem]
    judge_info: dict[str, Any] | None
    rows: list[JudgeRow]  # the judge first (when given), then the baselines
    outcomes: dict[str, list[PairOutcome]]  # judge name -> outcomes, item order
    human_alpha: float | None  # across annotators only (None with one label per item)
    human_prefer_longer: MetricValue
    human_tie_rate: float
    seed: int

    @property
    def data_fingerprint(self) -> str:
        return stable_hash([i.__dict__ for i in self.items])

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.name, "description": self.dataset.description, "file": self.dataset.path,
            "n_items": len(self.items), "data_fingerprint": self.data_fingerprint, "seed": self.seed,
            "judge": self.judge_info,
            "humans": {"annotators": len(self.items[0].annotations) if self.items else 0,
                       "alpha_between_annotators": self.human_alpha, "tie_rate": self.human_tie_rate,
                       "prefer_longer": self.human_prefer_longer.to_json()},
            "rows": [r.to_json() for r in self.rows],
        }

    def markdown(self) -> str:
        def num(v: float | None, digits: int = 3) -> str:
            return "-" if v is None else f"{v:.{digits}f}"

        header = ["judge", "n", "unscored", "agreement", "agreement w/o ties (n)", "agreement per order", "Cohen κ",
                  "Krippendorff α", "consistency", "prefers first", "prefers longer", "s / judgement",
                  "tokens / judgement", "cached"]
        rows = []
        for r in self.rows:
            rows.append([r.judge, str(r.n), str(r.n_unscored), fmt(r.agreement),
                         f"{fmt(r.agreement_no_ties)} ({r.agreement_no_ties.n_scored})", fmt(r.agreement_per_order),
                         num(r.kappa), num(r.alpha),
                         fmt(r.consistency), fmt(r.prefer_first), fmt(r.prefer_longer),
                         num(r.seconds_per_judgement, 2), num(r.tokens_per_judgement, 0),
                         "-" if r.baseline else str(r.n_cached)])
        n_ann = len(self.items[0].annotations) if self.items else 0
        rows.append([f"humans ({n_ann} annotator{'s' if n_ann != 1 else ''})", str(len(self.items)), "-", "-", "-",
                     "-", "-", num(self.human_alpha), "-", "-", fmt(self.human_prefer_longer), "-", "-", "-"])
        title = (f"Calibration on {self.dataset.name} ({self.dataset.description}), first {len(self.items)} items; "
                 f"human ties {self.human_tie_rate:.1%}. Every judge sees each pair in both orders; an "
                 "order-dependent verdict is a tie. 95% Wilson CIs.\n\n")
        return title + markdown_table(header, rows)


def run_study(ds: CalibrationDataset, items: Sequence[CalibrationItem], judge: PairJudge | None, *, seed: int = 0,
              progress: Progress | None = None) -> CalibrationReport:
    """The judge (if any) and the baselines on `items`, each pair in both orders."""
    if not items:
        raise HarnessError(f"calibration data {ds.name!r} has no items")
    queries = [PairQuery(i.id, i.request, i.output_1, i.output_2) for i in items]
    human = [i.human for i in items]
    # one row per annotator; None where an annotator did not label an item (alpha allows gaps)
    annotators: list[list[int | None]] = [list(col) for col in zip(*(i.annotations for i in items), strict=True)]
    lengths = [(len(i.output_1), len(i.output_2)) for i in items]
    judges: list[tuple[PairJudge, bool]] = [(BASELINES[name](seed), True) for name in BASELINES]
    if judge is not None:
        judges.insert(0, (judge, False))
    rows, outcomes = [], {}
    for j, is_baseline in judges:
        before = j.usage()
        got = judge_pairs(j, queries, None if is_baseline else progress)
        after = j.usage()
        outcomes[j.name] = got
        # judge_row only hands the rows on to krippendorff_alpha, which takes None for a gap
        rows.append(judge_row(j.name, j.fingerprint(), got, human, cast(Sequence[Sequence[int]], annotators), lengths,
                              baseline=is_baseline,
                              usage=after.since(before) if after is not None and before is not None else None))
    return CalibrationReport(
        dataset=ds, items=list(items), judge_info=judge.info() if judge is not None else None, rows=rows,
        outcomes=outcomes, human_alpha=krippendorff_alpha(annotators) if len(annotators) > 1 else None,
        human_prefer_longer=prefer_longer(human, lengths), human_tie_rate=sum(h == 0 for h in human) / len(human),
        seed=seed,
    )


def calibrate(dataset: str, data_dir: Path, judge: PairJudge | None, *, limit: int | None = None, seed: int = 0,
              progress: Progress | None = None) -> CalibrationReport:
    ds, items = load_dataset(dataset, data_dir, limit)
    return run_study(ds, items, judge, seed=seed, progress=progress)


def calibration_results(report: CalibrationReport, settings: dict[str, Any], source: str | None = None) -> list[Any]:
    """The judge's headline numbers as a generic result of kind "calibration" for the results
    store, keyed by the judge fingerprint (the one its pointwise / pairwise / ranking results
    record as details.judge_fingerprint) and the study's data and settings; [] for a
    baselines-only study (no judge to calibrate)."""
    from leaderboard.calibration import CALIBRATION
    from leaderboard.entries import GenericResult

    info = report.judge_info
    if info is None or not report.rows or report.rows[0].baseline or not info.get("model"):
        return []
    row, m = report.rows[0], report.rows[0].agreement
    details = {
        "study": "pairwise", "dataset": report.dataset.name, "description": report.dataset.description,
        "file": report.dataset.path, "data_fingerprint": report.data_fingerprint, "n_items": len(report.items),
        "judge_fingerprint": info["fingerprint"], "grader_fingerprint": info["fingerprint"],
        "model_fingerprint": info["model"], "model_label": info.get("model_label"), "prompt": info.get("prompt"),
        "parser": info.get("parser"), "generation": info.get("generation"),
        "agreement": m.value, "agreement_ci": [m.ci_low, m.ci_high], "ci_method": m.ci_method,
        "agreement_no_ties": row.agreement_no_ties.value, "agreement_per_order": row.agreement_per_order.value,
        "kappa": row.kappa, "alpha": row.alpha, "consistency": row.consistency.value,
        "prefer_first": row.prefer_first.value, "n_unscored": row.n_unscored, "settings": settings,
    }
    return [GenericResult(
        kind=CALIBRATION, name=report.dataset.name, model_name=str(info.get("model_label")),
        model_fingerprint=str(info["model"]),
        fingerprint=stable_hash([info["fingerprint"], report.data_fingerprint, settings]),
        value=m.value, ci=(m.ci_low, m.ci_high), n=m.n_scored, n_unscored=m.n_unscored, source=source,
        details=details,
    )]


def default_output(report: CalibrationReport) -> Path:
    jfp = (report.judge_info or {}).get("fingerprint", "baselines")
    return Path("runs") / "calibration" / f"{report.dataset.name}-{jfp[:12]}-n{len(report.items)}"


def write_calibration(report: CalibrationReport, folder: Path | None = None) -> Path:
    """calibration.md, calibration.json and the judge's per-item verdicts (items.jsonl)."""
    out = folder or default_output(report)
    write_json(out / "calibration.json", report.to_json())
    (out / "calibration.md").write_text(report.markdown(), encoding="utf-8")
    if report.judge_info is not None and report.rows and not report.rows[0].baseline:
        name = report.rows[0].judge
        write_jsonl(out / "items.jsonl", [{"human": i.human, "annotations": list(i.annotations), **o.to_json()}
                                          for i, o in zip(report.items, report.outcomes[name], strict=True)])
    return out
