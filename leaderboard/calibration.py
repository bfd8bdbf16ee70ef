"""Graders' and judges' measured agreement with humans, as the leaderboard shows it.

A calibration study (`harness judge calibrate --dataset NAME --store STORE`) is stored as a
generic result of kind "calibration" (judges.calibration / judges.healthbench_meta
`calibration_results`); its details name the grader it measured:

- `judge_fingerprint` (= `grader_fingerprint`): the judge's or grader's whole fingerprint
  (model, prompt text hash, parser, generation settings);
- `model_fingerprint`, `prompt.sha256`, `parser` and `generation`: its parts, because a rubric
  task's record keeps them apart (extra.aux_models.grader.fingerprint, extra.grader_prompt.sha256,
  extra.grader_parser, extra.grader_generation) rather than as one hash.

A judge result (pointwise, pairwise, Bradley–Terry) matches a study with the same judge
fingerprint; a rubric task result matches a study of the same grader model whose prompt hash,
parser and generation settings are the ones the task recorded (a jury's graders each their
own). Another prompt never matches: that grader is "not calibrated". Among several matching
studies the one over the most items counts, then the most recent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leaderboard.entries import GenericResult

CALIBRATION = "calibration"
HUMAN_AGREEMENT = "judge_human_agreement"  # judges.human.calibrate.JUDGE_HUMAN_AGREEMENT
NOT_CALIBRATED = "not calibrated"


@dataclass(frozen=True)
class GraderIdentity:
    """What a rubric task's record says of one grader (None where the record does not say)."""

    role: str  # grader; a jury's further graders grader_2, grader_3, ...
    model_fingerprint: str
    model_name: str
    prompt_sha256: str
    prompt_name: str
    parser_name: str | None = None
    parser_version: int | str | None = None
    temperature: float | None = None
    max_tokens: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


_GRADER_ROLE = re.compile(r"^grader(?:_([2-9]|[1-9]\d+))?$")  # as harness.protocols.rubric names them


def graders_of_task(extra: Mapping[str, Any]) -> tuple[GraderIdentity, ...]:
    """The graders of a rubric task from its record's `extra` (harness.protocols.rubric
    record_info and the run's aux_models), in jury order (grader, grader_2, ...; they share the
    prompt, parser and generation settings); () for a task without a grader."""
    prompt = _mapping(extra.get("grader_prompt"))
    aux = _mapping(extra.get("aux_models"))
    if not prompt.get("sha256"):
        return ()
    roles = sorted((r for r in aux if _GRADER_ROLE.match(r) and isinstance(aux[r], Mapping)),
                   key=lambda r: 1 if r == "grader" else int(r.rsplit("_", 1)[1]))
    parser, generation = _mapping(extra.get("grader_parser")), _mapping(extra.get("grader_generation"))
    return tuple(GraderIdentity(
        role=role, model_fingerprint=str(aux[role].get("fingerprint", "")), model_name=str(aux[role].get("name", "?")),
        prompt_sha256=str(prompt["sha256"]), prompt_name=str(prompt.get("name", "")),
        parser_name=parser.get("name"), parser_version=parser.get("version"),
        temperature=generation.get("temperature"), max_tokens=generation.get("max_tokens"),
    ) for role in roles)


def _same(recorded: Any, studied: Any) -> bool:
    """Equal where both sides recorded the setting (a side that did not record it does not veto)."""
    return recorded is None or studied is None or recorded == studied


def grader_matches(grader: GraderIdentity, study: GenericResult) -> bool:
    d = study.details
    prompt, parser, generation = _mapping(d.get("prompt")), _mapping(d.get("parser")), _mapping(d.get("generation"))
    return (study.kind == CALIBRATION and bool(grader.model_fingerprint)
            and d.get("model_fingerprint") == grader.model_fingerprint
            and prompt.get("sha256") == grader.prompt_sha256
            and _same(grader.parser_name, parser.get("name")) and _same(grader.parser_version, parser.get("version"))
            and _same(grader.temperature, generation.get("temperature"))
            and _same(grader.max_tokens, generation.get("max_tokens")))


def _best(found: Sequence[GenericResult]) -> GenericResult | None:
    return max(found, key=lambda g: (g.n, g.created_at)) if found else None


def study_for_grader(grader: GraderIdentity, studies: Sequence[GenericResult]) -> GenericResult | None:
    """The calibration study of this rubric grader (same model, prompt hash, parser, generation)."""
    return _best([s for s in studies if grader_matches(grader, s)])


def graders_agreement(graders: Sequence[GraderIdentity], studies: Sequence[GenericResult]) -> tuple[str, bool]:
    """(text, every grader calibrated) for a rubric task: one grader's agreement_text, or for a
    jury each grader's, "grader_2 (name): ...", joined with "; "."""
    found = [study_for_grader(g, studies) for g in graders]
    if len(graders) == 1:
        return agreement_text(found[0]), found[0] is not None
    text = "; ".join(f"{g.role} ({g.model_name}): {agreement_text(s)}" for g, s in zip(graders, found, strict=True))
    return text, all(s is not None for s in found)


def is_judge_result(result: GenericResult) -> bool:
    """A result an LLM judge produced (pointwise, pairwise, Bradley–Terry): one that can be calibrated."""
    return bool(result.details.get("judge_fingerprint")) and result.kind not in (CALIBRATION, HUMAN_AGREEMENT) \
        and not result.kind.startswith("human_")


def study_for_judge(result: GenericResult, studies: Sequence[GenericResult]) -> GenericResult | None:
    """The calibration study (or human-campaign agreement) of the judge that produced `result`:
    the same judge fingerprint, which hashes the judge's prompt text too."""
    jfp = result.details.get("judge_fingerprint")
    if not jfp or not is_judge_result(result):
        return None
    return _best([s for s in studies if s.kind in (CALIBRATION, HUMAN_AGREEMENT)
                  and s.details.get("judge_fingerprint") == jfp])


def _num(v: Any) -> str | None:
    return f"{float(v):.2f}" if isinstance(v, int | float) and not isinstance(v, bool) else None


def agreement_text(study: GenericResult | None) -> str:
    """"F1 0.72, κ 0.44 (healthbench_meta, n=120)", "agreement 0.61, κ 0.20 (llmbar_natural, n=40)",
    or "not calibrated"."""
    if study is None:
        return NOT_CALIBRATED
    d = study.details
    parts = []
    f1 = _num(d.get("balanced_f1"))
    agreement = _num(d.get("agreement") if "agreement" in d else study.value)
    if f1 is not None:
        parts.append(f"F1 {f1}")
    elif agreement is not None:
        parts.append(f"agreement {agreement}")
    kappa = _num(d.get("kappa"))
    parts.append(f"κ {kappa}" if kappa is not None else "κ n/a")
    where = d.get("dataset") or d.get("campaign") or study.name
    return f"{', '.join(parts)} ({where}, n={study.n})"


__all__ = ["CALIBRATION", "NOT_CALIBRATED", "GraderIdentity", "agreement_text", "grader_matches", "graders_agreement",
           "graders_of_task", "is_judge_result", "study_for_grader", "study_for_judge"]
