"""A campaign's labels out of the app: JSONL exports (our labels, MT-bench human judgments,
LLMBar pairs) and the per-model numbers as the results store's generic results."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.types import stable_hash
from judges.human.annotations import AnnotationStore
from judges.human.campaigns import prompt_messages, prompt_text
from judges.human.protocols import OVERALL, SCALE
from judges.human.report import (
    HUMAN_PAIRWISE,
    HUMAN_POINTWISE,
    HUMAN_RUBRIC,
    CampaignContext,
    build_report,
    open_context,
)

# -- exports ------------------------------------------------------------------------------


def _labels_rows(ctx: CampaignContext) -> list[dict[str, Any]]:
    out = []
    for lab in ctx.labels:
        item = ctx.items[lab.item_id]
        out.append({
            "campaign": ctx.campaign.name, "protocol": lab.protocol, "campaign_fingerprint": lab.campaign_fingerprint,
            "item_key": lab.item_key, "gold": item.is_gold, "task_key": item.task_key, "sample_id": item.sample_id,
            "annotator_id": lab.annotator_id, "annotator": lab.annotator, "role": lab.role,
            "prompt": item.payload["prompt"],
            "answers": [{"model": ctx.models.get(a["model_fingerprint"], a["model_name"]),
                         "model_fingerprint": a["model_fingerprint"], "run_id": a["run_id"], "text": a["text"]}
                        for a in item.payload["answers"]],
            "values": lab.values, "comment": lab.comment, "seconds": lab.seconds, "revision": lab.revision,
            "created_at": lab.created_at, "updated_at": lab.updated_at,
        })
    return out


def _need_pairwise(ctx: CampaignContext, fmt: str) -> None:
    if ctx.campaign.protocol_name != "pairwise":
        raise HarnessError(f"the {fmt} format holds pairwise judgements; campaign {ctx.campaign.name!r} is "
                           f"{ctx.campaign.protocol_name} (use --format labels)")


def _mt_bench_rows(ctx: CampaignContext, criterion: str = OVERALL) -> list[dict[str, Any]]:
    """One row per human judgement, as in lmsys/mt_bench_human_judgments (split "human")."""
    _need_pairwise(ctx, "mt-bench")
    winner = {"x": "model_a", "y": "model_b", "tie": "tie", "both_bad": "tie (bothbad)"}
    out = []
    for lab in ctx.regular:
        if criterion not in lab.values:
            continue
        item = ctx.items[lab.item_id]
        turns = prompt_messages(item.payload["prompt"])
        a, b = item.payload["answers"]
        out.append({
            "question_id": item.sample_id, "model_a": ctx.models[a["model_fingerprint"]],
            "model_b": ctx.models[b["model_fingerprint"]], "winner": winner[str(lab.values[criterion])],
            "judge": f"{lab.role}_{lab.annotator_id}", "turn": 1,
            "conversation_a": [*turns, {"role": "assistant", "content": a["text"]}],
            "conversation_b": [*turns, {"role": "assistant", "content": b["text"]}],
        })
    return out


def majority(sides: Sequence[str]) -> str | None:
    """The side most labels chose, if more than half did; else None."""
    if not sides:
        return None
    (side, count), *_ = Counter(sides).most_common(1)
    return side if count * 2 > len(sides) else None


def _llmbar_rows(ctx: CampaignContext, criterion: str = OVERALL) -> list[dict[str, Any]]:
    """One row per item with a decisive majority (LLMBar has no ties): input, output_1,
    output_2, label (1 or 2)."""
    _need_pairwise(ctx, "llmbar")
    by_item: dict[int, list[str]] = defaultdict(list)
    for lab in ctx.regular:
        if criterion in lab.values:
            by_item[lab.item_id].append(str(lab.values[criterion]))
    out = []
    for item_id, sides in by_item.items():
        m = majority(sides)
        if m not in ("x", "y"):
            continue
        item = ctx.items[item_id]
        a, b = item.payload["answers"]
        out.append({"input": prompt_text(item.payload["prompt"]), "output_1": a["text"], "output_2": b["text"],
                    "label": 1 if m == "x" else 2})
    return out


EXPORTS: dict[str, Callable[[CampaignContext], list[dict[str, Any]]]] = {
    "labels": _labels_rows, "mt-bench": _mt_bench_rows, "llmbar": _llmbar_rows,
}


def export_rows(store: str | Path | AnnotationStore, name: str, fmt: str = "labels") -> list[dict[str, Any]]:
    if fmt not in EXPORTS:
        raise HarnessError(f"export format {fmt!r} is not one of {', '.join(EXPORTS)}")
    return EXPORTS[fmt](open_context(store, name))


# -- the leaderboard ------------------------------------------------------------------------


def generic_results(store: str | Path | AnnotationStore, name: str) -> list[Any]:
    """The campaign's per-model numbers as the store's generic results (kinds human_pointwise,
    human_pairwise, human_rubric), fingerprinted by campaign and labels, so the leaderboard
    shows them beside the judges' results."""
    from leaderboard.entries import GenericResult

    ctx = open_context(store, name)
    campaign, report = ctx.campaign, build_report(ctx)
    fp = stable_hash([campaign.fingerprint, report.data["labels_fingerprint"]])
    names = {v: k for k, v in ctx.models.items()}
    model_names = {fp_: next(a["model_name"] for i in ctx.items.values() for a in i.payload["answers"]
                             if a["model_fingerprint"] == fp_) for fp_ in ctx.models}
    details = {"campaign": campaign.name, "campaign_fingerprint": campaign.fingerprint, "scale": list(SCALE)}
    out = []

    def add(kind: str, result_name: str, model: str, m: dict[str, Any], extra: dict[str, Any]) -> None:
        mfp = names[model]
        ci = m.get("ci") or [None, None]
        out.append(GenericResult(kind=kind, name=result_name, model_name=model_names[mfp], model_fingerprint=mfp,
                                 fingerprint=fp, value=m.get("value"), ci=(ci[0], ci[1]), n=int(m.get("n_scored", 0)),
                                 n_unscored=int(m.get("n_unscored", 0)), source=f"campaign:{campaign.name}",
                                 details={**details, **extra, "ci_method": m.get("ci_method")}))

    for role, means in report.data.get("means", {}).items():
        for key, m in means.items():
            model, _, dim = key.rpartition(":")
            if m.get("value") is not None:
                add(HUMAN_POINTWISE, f"{dim} ({role})", model, m, {"role": role, "dimension": dim})
    for entry in report.data.get("pairwise", {}).values():
        x, y = entry["model_x"], entry["model_y"]
        for side, model, other in (("x", x, y), ("y", y, x)):
            add(HUMAN_PAIRWISE, f"win rate vs {other} ({entry['criterion']}, {entry['role']})", model, entry[side],
                {"role": entry["role"], "criterion": entry["criterion"], "opponent": other})
    for key, entry in report.data.get("rubric", {}).items():
        role, _, model = key.partition(":")
        add(HUMAN_RUBRIC, f"rubric score ({role})", model, entry["score"], {"role": role})
    return out
