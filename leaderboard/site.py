"""Static leaderboard site: index (sortable, filterable ranking), one page per model (task
details with each task's cost and each rubric grader's measured agreement with humans, CI
bars, judge radar, the history of its main metrics across runs, example answers, judge results
with each judge's measured agreement with humans), case-study pages (every
model's answer to one question side by side), leaderboard.json. No network at view time: the
CSS and JS are copied next to the pages, the plots are inline SVG computed here.

Model output, prompts and even model names are untrusted text: templates autoescape every
value, the page's Content-Security-Policy allows only its own script file, and the script
never turns data into HTML.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from harness.errors import HarnessError
from harness.run.folder import RunFolder
from leaderboard.calibration import HUMAN_AGREEMENT, agreement_text, study_for_judge
from leaderboard.casestudy import case_studies, index_rows
from leaderboard.cost import format_usd
from leaderboard.entries import GenericResult, StoredTaskResult
from leaderboard.export import to_json
from leaderboard.history import model_history
from leaderboard.rankings import (
    JUDGE_DIMENSIONS,
    Cell,
    Leaderboard,
    ModelRow,
    TaskColumn,
)

ASSETS = ("style.css", "app.js")
EXAMPLES_PER_TASK = 3
PROMPT_CHARS = 1200
BAR_WIDTH = 120


@dataclass(frozen=True)
class SiteOutput:
    out_dir: Path
    index: Path
    model_pages: list[Path]


def _domain(values: Sequence[float | None]) -> tuple[float, float]:
    """Axis range for CI bars: [0, 1] for proportions, else the data's range padded by 5 %."""
    nums = [v for v in values if v is not None and math.isfinite(v)]
    if not nums or (min(nums) >= 0 and max(nums) <= 1):
        return 0.0, 1.0
    lo, hi = min(nums), max(nums)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def ci_bar(value: float | None, low: float | None, high: float | None, domain: tuple[float, float],
           width: float = BAR_WIDTH) -> dict[str, float] | None:
    """x positions (in px) of a CI bar and its point on an axis `width` wide."""
    if value is None:
        return None
    lo_d, hi_d = domain

    def x(v: float) -> float:
        return round(max(0.0, min(1.0, (v - lo_d) / (hi_d - lo_d))) * width, 2)

    return {"x": x(value), "lo": x(low if low is not None else value), "hi": x(high if high is not None else value),
            "width": width}


def radar(dims: dict[str, Any], size: float = 300) -> dict[str, Any]:
    """Geometry of a radar chart of the seven judge dimensions (missing ones drawn at 0)."""
    values = {d: (r.value if r.value is not None else 0.0) for d, r in dims.items()}
    scale = None
    for r in dims.values():
        s = r.details.get("scale")
        if isinstance(s, list | tuple) and len(s) == 2:
            scale = (float(s[0]), float(s[1]))
            break
    if scale is None:
        top = max(values.values(), default=1.0)
        scale = (0.0, next(c for c in (1.0, 5.0, 10.0, 100.0, top) if top <= c))
    c, radius, n = size / 2, size / 2 - 60, len(JUDGE_DIMENSIONS)

    def point(i: int, frac: float) -> tuple[float, float]:
        angle = -math.pi / 2 + 2 * math.pi * i / n
        return round(c + radius * frac * math.cos(angle), 2), round(c + radius * frac * math.sin(angle), 2)

    def frac(v: float) -> float:
        return max(0.0, min(1.0, (v - scale[0]) / (scale[1] - scale[0])))

    axes = []
    for i, d in enumerate(JUDGE_DIMENSIONS):
        ex, ey = point(i, 1.0)
        lx, ly = point(i, 1.18)
        anchor = "middle" if abs(lx - c) < 5 else ("start" if lx > c else "end")
        axes.append({"name": d, "x": ex, "y": ey, "lx": lx, "ly": ly, "anchor": anchor,
                     "value": dims[d].value if d in dims else None})
    rings = [" ".join(f"{x},{y}" for x, y in (point(i, f) for i in range(n))) for f in (0.25, 0.5, 0.75, 1.0)]
    poly = " ".join(f"{x},{y}" for x, y in (point(i, frac(values.get(d, scale[0]))) for i, d in
                                           enumerate(JUDGE_DIMENSIONS)))
    return {"size": size, "c": c, "axes": axes, "rings": rings, "polygon": poly, "scale": scale}


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        text = "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                         for m in prompt)
    else:
        text = "" if prompt is None else str(prompt)
    return text if len(text) <= PROMPT_CHARS else text[:PROMPT_CHARS] + " […]"


def _target_text(target: Any) -> str:
    # MCQA targets are choice indexes; the answers are letters.
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < 26:
        return f"{chr(65 + target)} (choice {target})"
    return "" if target is None else str(target)


def _output_text(score: dict[str, Any]) -> str:
    """The model's generated text (generative and NER tasks keep it in the score's metadata), shortened."""
    output = (score.get("metadata") or {}).get("output")
    if not isinstance(output, str):
        return ""
    return output if len(output) <= PROMPT_CHARS else output[:PROMPT_CHARS] + " […]"


def examples(row: ModelRow, columns: Sequence[TaskColumn]) -> dict[str, dict[str, Any]]:
    """A few samples per task from each run's samples.jsonl (first by index), or why not."""
    out: dict[str, dict[str, Any]] = {}
    cache: dict[str, dict[str, dict[str, dict[str, Any]]] | str] = {}
    for col in columns:
        cell = row.cells.get(col.key)
        if cell is None:
            continue
        path = cell.run_path or ""
        if path not in cache:
            try:
                cache[path] = RunFolder(Path(path)).read_samples() if path else "the store has no run folder for it"
            except HarnessError as exc:
                cache[path] = str(exc)
        loaded = cache[path]
        if isinstance(loaded, str):
            out[col.key] = {"error": loaded, "samples": []}
            continue
        entries = sorted(loaded.get(col.task_key, {}).values(), key=lambda e: (e.get("index", 0), e["sample_id"]))
        out[col.key] = {"error": None, "samples": [
            {"id": e["sample_id"], "prompt": _prompt_text(e.get("prompt")), "target": _target_text(e.get("target")),
             "answer": e["score"].get("answer"), "explanation": e["score"].get("explanation"),
             "output": _output_text(e["score"]), "value": e["score"].get("value")}
            for e in entries[:EXAMPLES_PER_TASK]
        ]}
    return out


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("leaderboard", "templates"), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["usd"] = format_usd
    return env


def human_calibration(result: GenericResult, lb: Leaderboard) -> GenericResult | None:
    """The agreement with human labels measured for the judge that produced `result`: a
    calibration study (kind "calibration", `harness judge calibrate --dataset ... --store`) or a
    campaign's agreement (kind judge_human_agreement) with the same judge fingerprint, which
    hashes the judge's model, prompt text, parser and settings (the same judge model with
    another prompt is not calibrated); None: not calibrated."""
    campaigns = [g for r in lb.rows for g in r.extras.values() if g.kind == HUMAN_AGREEMENT]
    return study_for_judge(result, [*lb.calibrations, *campaigns])


def build_site(lb: Leaderboard, out_dir: Path, *, history: Sequence[StoredTaskResult] = ()) -> SiteOutput:
    """Write index.html, models/<slug>.html, case-study/ pages, assets/ and leaderboard.json
    under out_dir. `history`: every stored task result (Store.task_results()), for the
    per-model history charts; without it the model pages have none."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "models").mkdir(exist_ok=True)
    (out_dir / "assets").mkdir(exist_ok=True)
    (out_dir / "case-study").mkdir(exist_ok=True)
    templates = resources.files("leaderboard") / "templates"
    for name in ASSETS:
        (out_dir / "assets" / name).write_text((templates / name).read_text(encoding="utf-8"), encoding="utf-8")
    env = _environment()

    domains: dict[str, tuple[float, float]] = {}
    for col in lb.columns:
        cells = [r.cells.get(col.key) for r in lb.rows]
        domains[col.key] = _domain([v for c in cells if c for v in (c.value, c.ci_low, c.ci_high)])
    for metric in lb.average_metrics:
        domains[f"avg:{metric}"] = _domain([v for r in lb.rows for a in [r.averages[metric]]
                                            for v in (a.value, a.ci_low, a.ci_high)])
    for e in lb.extra_columns:
        domains[e.key] = _domain([v for r in lb.rows if e.key in r.extras
                                  for v in (r.extras[e.key].value, *r.extras[e.key].ci)])

    def bar(cell: Cell | None, key: str) -> dict[str, float] | None:
        return None if cell is None else ci_bar(cell.value, cell.ci_low, cell.ci_high, domains[key])

    studies = case_studies(lb, _prompt_text, _target_text)
    common = {"lb": lb, "bar": bar, "ci_bar": ci_bar, "domains": domains, "examples_per_task": EXAMPLES_PER_TASK,
              "case_studies": index_rows(studies), "calibration": lambda r: human_calibration(r, lb),
              "agreement_text": agreement_text}
    index = out_dir / "index.html"
    index.write_text(env.get_template("index.html").render(**common, root=""), encoding="utf-8")
    (out_dir / "case-study" / "index.html").write_text(env.get_template("case_index.html").render(
        **common, root="../"), encoding="utf-8")
    for study in studies:
        (out_dir / "case-study" / f"{study.slug}.html").write_text(env.get_template("case_study.html").render(
            **common, root="../", study=study), encoding="utf-8")
    better = {c.main_metric: c.higher_is_better for c in lb.columns}
    pages = []
    for row in lb.rows:
        dims = row.judge_dimensions()
        page = out_dir / "models" / f"{row.slug}.html"
        page.write_text(env.get_template("model.html").render(
            **common, root="../", row=row, examples=examples(row, lb.columns),
            radar=radar(dims) if dims else None, dims=dims,
            history=model_history(history, row.model_fingerprint, row.model_name, better),
        ), encoding="utf-8")
        pages.append(page)
    (out_dir / "leaderboard.json").write_text(to_json(lb), encoding="utf-8")
    return SiteOutput(out_dir, index, pages)
