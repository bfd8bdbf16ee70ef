"""Judges: pointwise scores on the seven medical dimensions, pairwise battles in both orders,
Bradley–Terry rankings, and calibration studies against human labels."""

from __future__ import annotations

from harness.registry import lazy_exports

# Public names load lazily: scipy, sklearn, krippendorff and the backends load only when used.
_EXPORTS = {
    "JudgeConfig": "judges.judge",
    "Judge": "judges.judge",
    "Judgement": "judges.judge",
    "JudgePrompt": "judges.prompt",
    "load_prompt": "judges.prompt",
    "Fence": "judges.prompt",
    "PARSERS": "judges.parse",
    "ReplyError": "judges.parse",
    "load_run": "judges.runs",
    "run_pointwise": "judges.pointwise",
    "write_pointwise": "judges.pointwise",
    "PairQuery": "judges.pairs",
    "LLMPairJudge": "judges.pairs",
    "FunctionPairJudge": "judges.pairs",
    "BASELINES": "judges.pairs",
    "judge_pairs": "judges.pairs",
    "pair_stats": "judges.pairs",
    "run_pairwise": "judges.pairwise",
    "write_pairwise": "judges.pairwise",
    "Battle": "judges.ranking",
    "bradley_terry": "judges.ranking",
    "rank_runs": "judges.ranking",
    "write_rank": "judges.ranking",
    "DATASETS": "judges.calibration",
    "calibrate": "judges.calibration",
    "write_calibration": "judges.calibration",
    "pointwise_injection": "judges.injection",
    "pairwise_injection": "judges.injection",
    "import_results": "judges.results",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_exports('judges', _EXPORTS)
