"""How well the answer extractors read the golden cases (tests/fixtures/extraction_cases.json).

    python benchmarks/extraction_report.py [--cases PATH] [--against-git REV] [--note TEXT] [--failures]

For every case its own extractor (`choice` or `last_answer`) runs on the text. A case that
commits to an option (expected index) is *read right* when that index comes back; a case that
commits to none (expected null: two answers, a refusal, a hypothetical only, a retraction that
ends undecided, ...) must come back unsure: a letter there is the silent error this counts
(goal 0). `--against-git REV` also scores the extractor module as it was at that commit (e.g.
HEAD) on the same cases, so a change shows its before and after. Prints one table; no model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODULE = "harness/protocols/extract.py"


def load_at(rev: str) -> ModuleType:
    """The extractor module as committed at `rev`, imported from a temporary file."""
    source = subprocess.run(["git", "show", f"{rev}:{MODULE}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"extract_{rev.replace('/', '_')}.py"
    # Its own registry, so the names do not clash with the current module's.
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"extract_at_{abs(hash(rev))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(module: ModuleType, cases: list[dict[str, Any]]) -> dict[str, Any]:
    committed = [c for c in cases if c["expected"] is not None]
    open_ = [c for c in cases if c["expected"] is None]
    right = wrong = unsure = lettered = 0
    failures = []
    for c in cases:
        got = module.EXTRACTORS.get(c["extractor"])(c["text"], tuple(c["labels"]), tuple(c["choices"]))
        if c["expected"] is None:
            if got.index is not None:
                lettered += 1
                failures.append((c, got))
        elif got.index == c["expected"]:
            right += 1
        else:
            failures.append((c, got))
            if got.index is None:
                unsure += 1
            else:
                wrong += 1
    return {"cases": len(cases), "committed": len(committed), "right": right, "wrong": wrong, "unsure": unsure,
            "non_committal": len(open_), "lettered": lettered, "failures": failures}


def row(name: str, m: dict[str, Any]) -> list[str]:
    share = m["right"] / m["committed"] if m["committed"] else float("nan")
    return [name, str(m["cases"]), f"{m['right']}/{m['committed']} ({share:.1%})", str(m["wrong"]), str(m["unsure"]),
            f"{m['lettered']}/{m['non_committal']}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=Path, default=ROOT / "tests/fixtures/extraction_cases.json")
    ap.add_argument("--against-git", metavar="REV", help="also score the extractor module at this git revision")
    ap.add_argument("--failures", action="store_true", help="list the cases each version gets wrong")
    ap.add_argument("--note", metavar="TEXT", help="only the cases whose note holds TEXT (e.g. 'real SmolLM2')")
    args = ap.parse_args(argv)
    cases = json.loads(args.cases.read_text(encoding="utf-8"))
    if args.note:
        cases = [c for c in cases if args.note in c["note"]]
    from harness.protocols import extract

    versions: list[tuple[str, ModuleType]] = []
    if args.against_git:
        versions.append((f"extract.py at {args.against_git}", load_at(args.against_git)))
    versions.append(("extract.py (working tree)", extract))
    header = ["extractor module", "cases", "committed answers read right", "wrong letter", "left unsure",
              "letters given to non-committal answers (goal 0)"]
    results = [(name, measure(module, cases)) for name, module in versions]
    rows = [header, *(row(name, m) for name, m in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(f"golden cases: {args.cases.relative_to(ROOT) if args.cases.is_relative_to(ROOT) else args.cases}")
    for k, r in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    if args.failures:
        for name, m in results:
            print(f"\n{name}: {len(m['failures'])} cases not read as expected")
            for c, got in m["failures"]:
                print(f"  [{c['extractor']}] expected {c['expected']}, got {got.index} ({got.method}): "
                      f"{c['text'][:90]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
