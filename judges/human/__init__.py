"""Human evaluation: campaigns over stored runs, a web app where clinicians and lay users rate,
compare and study model answers, and the reports and calibration data their labels feed
(DESIGN.md §5, "humans are evaluators too")."""

from __future__ import annotations

# Public names load lazily: the web stack (fastapi, starlette) loads only when the app is used.
_EXPORTS = {
    "AnnotationStore": "judges.human.annotations",
    "create_campaign": "judges.human.annotations",
    "CampaignSpec": "judges.human.campaigns",
    "make_spec": "judges.human.campaigns",
    "PROTOCOLS": "judges.human.protocols",
    "DIMENSIONS": "judges.human.protocols",
    "create_app": "judges.human.app",
    "serve": "judges.human.server",
    "campaign_report": "judges.human.report",
    "export_rows": "judges.human.exports",
    "generic_results": "judges.human.exports",
    "human_pairwise_items": "judges.human.calibrate",
    "calibrate_pairwise": "judges.human.calibrate",
    "calibrate_pointwise": "judges.human.calibrate",
    "calibrate_command": "judges.human.calibrate",
    "rubric_agreement": "judges.human.calibrate",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'judges.human' has no attribute {name!r}")
