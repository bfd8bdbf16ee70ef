"""`harness annotate serve|create|invite|report|export`: argument parsing over judges.human's
library functions (imported inside the handlers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.cli.options import split_list, store_arg

STORE_HELP = "results store: SQLite file or SQLAlchemy URL (default: $HARNESS_STORE)"


def _split(values: list[str] | None) -> list[str]:
    return [p for v in values or [] for p in split_list(v)]


def cmd_serve(args: argparse.Namespace) -> int:
    from judges.human.server import serve

    store = store_arg(args)
    shown = store
    if "://" in store:  # never print a database password
        from sqlalchemy.engine import make_url

        shown = make_url(store).render_as_string(hide_password=True)
    print(f"serving http://{args.host}:{args.port}/ (store {shown}); Ctrl-C stops", file=sys.stderr)
    serve(store, host=args.host, port=args.port, allow_remote=args.allow_remote,
          secure_cookies=args.secure_cookies, log_level="info" if args.access_log else "warning")
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    from judges.human.annotations import create_campaign
    from judges.human.campaigns import make_spec

    spec = make_spec(args.name, args.runs, args.protocol, dimensions=_split(args.dimensions), per_item=args.per_item,
                     items_per_annotator=args.items_per_annotator, roles=_split(args.roles), tasks=_split(args.tasks),
                     limit=args.limit, seed=args.seed, gold=args.gold, rubric=args.rubric)
    campaign = create_campaign(store_arg(args), spec)
    from judges.human.annotations import AnnotationStore

    with AnnotationStore(store_arg(args)) as db:
        items = db.items(campaign)
    n_gold = sum(i.is_gold for i in items)
    print(f"campaign {campaign.name}: {campaign.protocol_name}, {len(items) - n_gold} items, {n_gold} gold, "
          f"{spec.per_item} annotator(s) of each role per item, roles {', '.join(spec.roles)}, "
          f"dimensions {', '.join(spec.dimensions) or '-'} (fingerprint {campaign.fingerprint[:12]})")
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    from judges.human.annotations import AnnotationStore

    with AnnotationStore(store_arg(args)) as db:
        who, token = db.invite(args.name, args.role, days=args.days)
    base = args.base_url.rstrip("/")
    print(f"{who.name} ({who.role}): one-time sign-in link, valid {args.days} days; send it privately:",
          file=sys.stderr)
    print(f"{base}/signin/{token}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from judges.human.exports import generic_results
    from judges.human.report import campaign_report

    report = campaign_report(store_arg(args), args.name)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False, sort_keys=True))
    else:
        print(report.markdown().rstrip("\n"))
    if args.publish:
        from leaderboard.store import Store

        results = generic_results(store_arg(args), args.name)
        with Store(store_arg(args)) as store:
            added = store.add_results(results)
        print(f"store: {added} new result(s) of {len(results)} for the leaderboard", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from judges.human.exports import export_rows

    rows = export_rows(store_arg(args), args.name, args.format)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{len(rows)} row(s) written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_commands(sub: Any) -> None:
    """Register `annotate` and its commands on the top-level subparsers."""
    p = sub.add_parser("annotate", help="human evaluation: campaigns, annotators, the web app, reports")
    a = p.add_subparsers(dest="annotate_command", required=True)

    s = a.add_parser("serve", help="run the annotation web app (loopback only unless --allow-remote)")
    s.add_argument("--store", help=STORE_HELP)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    s.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host; put the app behind TLS (a reverse proxy) then")
    s.add_argument("--secure-cookies", action="store_true", help="mark the session cookie HTTPS-only (behind TLS)")
    s.add_argument("--access-log", action="store_true", help="log requests (paths only; sign-in tokens redacted)")
    s.set_defaults(func=cmd_serve)

    c = a.add_parser("create", help="create a campaign from stored runs")
    c.add_argument("name", help="campaign name (letters, digits, '-', '_', '.')")
    c.add_argument("--runs", nargs="+", required=True, help="run folders whose outputs are judged")
    c.add_argument("--protocol", required=True, choices=["pointwise", "pairwise", "rubric", "case-study"])
    c.add_argument("--dimensions", action="append",
                   help="comma-separated dimensions (pointwise default: all seven; pairwise default: overall)")
    c.add_argument("--per-item", type=int, default=2, help="annotators of each role per item, K (default 2)")
    c.add_argument("--items-per-annotator", type=int, help="items one annotator gets (default: all still open)")
    c.add_argument("--roles", action="append", help="roles that annotate: expert,lay (default per protocol)")
    c.add_argument("--tasks", action="append", help="comma-separated task names or keys (default: all generative)")
    c.add_argument("--limit", type=int, help="use only the first N shared samples")
    c.add_argument("--seed", type=int, default=0, help="seed of the item order and answer placement (default 0)")
    c.add_argument("--gold", type=Path, help="gold items for attention checks (JSON Lines)")
    c.add_argument("--rubric", type=Path, help="rubric criteria per sample when the runs carry none (JSON Lines)")
    c.add_argument("--store", help=STORE_HELP)
    c.set_defaults(func=cmd_create)

    i = a.add_parser("invite", help="add an annotator (or admin) and print a one-time sign-in link")
    i.add_argument("name", help="the annotator's name (unique)")
    i.add_argument("--role", required=True, choices=["expert", "lay", "admin"])
    i.add_argument("--days", type=int, default=14, help="days the link stays valid (default 14)")
    i.add_argument("--base-url", default="http://127.0.0.1:8080", help="where the app is reached (default "
                   "http://127.0.0.1:8080)")
    i.add_argument("--store", help=STORE_HELP)
    i.set_defaults(func=cmd_invite)

    r = a.add_parser("report", help="means, win rates, agreement and gold accuracy of a campaign")
    r.add_argument("name", help="campaign name")
    r.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    r.add_argument("--publish", action="store_true",
                   help="store the per-model results for the leaderboard (kinds human_pointwise, human_pairwise, ...)")
    r.add_argument("--store", help=STORE_HELP)
    r.set_defaults(func=cmd_report)

    e = a.add_parser("export", help="a campaign's labels as JSON Lines")
    e.add_argument("name", help="campaign name")
    e.add_argument("--format", default="labels", choices=["labels", "mt-bench", "llmbar"],
                   help="labels (everything), mt-bench (human judgments) or llmbar (pairwise majority, no ties)")
    e.add_argument("--output", help="file to write (default: standard output)")
    e.add_argument("--store", help=STORE_HELP)
    e.set_defaults(func=cmd_export)
