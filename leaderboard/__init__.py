"""Leaderboard: a results store (runs and judge results), rankings with confidence intervals,
a static HTML site, and `compare` with paired significance tests for nightly regression gates."""

from __future__ import annotations

from harness.registry import lazy_exports

# Public names load lazily: sqlalchemy, jinja2 and scipy load only when used.
_EXPORTS = {
    "Store": "leaderboard.store",
    "GenericResult": "leaderboard.store",
    "ImportOutcome": "leaderboard.store",
    "Leaderboard": "leaderboard.rankings",
    "build_leaderboard": "leaderboard.rankings",
    "leaderboard_from_store": "leaderboard.rankings",
    "JUDGE_DIMENSIONS": "leaderboard.rankings",
    "render": "leaderboard.export",
    "FORMATS": "leaderboard.export",
    "build_site": "leaderboard.site",
    "Comparison": "leaderboard.compare",
    "compare_runs": "leaderboard.compare",
    "format_comparison": "leaderboard.compare",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_exports('leaderboard', _EXPORTS)
