"""The campaigns' data on the results store's database: campaigns and items, annotators and
their one-time invites, sessions, per-annotator queues (assignments) and labels.

Every write is one transaction committed before the caller answers, so a server killed at
any moment loses no label it has acknowledged. On SQLite, writes take the store's IMMEDIATE
transactions and busy timeout (leaderboard.store), so concurrent annotators queue instead of
failing; the allocation of a queue runs inside one such transaction, which keeps "K
annotators of each role per item" exact.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from harness.errors import HarnessError
from harness.types import stable_hash
from judges.human import auth
from judges.human.campaigns import CampaignSpec, ItemDraft
from judges.human.entities import (
    Annotator,
    Assignment,
    Campaign,
    Item,
    Label,
    assignment_from_row,
    campaign_from_row,
    item_from_row,
    label_from_row,
    now,
)
from judges.human.protocols import ROLES
from judges.human.tables import (
    HUMAN_SCHEMA_VERSION,
    annotators_table,
    assignments_table,
    campaigns_table,
    human_info,
    invites_table,
    items_table,
    labels_table,
    metadata,
    sessions_table,
)
from leaderboard.store import Store

MAX_SECONDS_PER_VISIT = 3600.0  # time on an item beyond this is someone who walked away


class AnnotationStore:
    """Human-evaluation data in the results store at `url_or_path` (SQLite path or URL)."""

    def __init__(self, url_or_path: str | Path | Store):
        self.store = url_or_path if isinstance(url_or_path, Store) else Store(url_or_path)
        self._owns_store = not isinstance(url_or_path, Store)
        self.engine = self.store.engine
        self._create()

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        try:
            with self.store.transaction() as conn:
                metadata.create_all(conn)
                for key, value in (("schema_version", str(HUMAN_SCHEMA_VERSION)), ("session_key", auth.new_token())):
                    if conn.execute(select(human_info.c.value).where(human_info.c.key == key)).first() is None:
                        conn.execute(human_info.insert().values(key=key, value=value))
        except IntegrityError:
            pass  # another process created them at the same moment
        with self.engine.connect() as conn:
            version = conn.execute(select(human_info.c.value).where(human_info.c.key == "schema_version")).scalar()
        if version != str(HUMAN_SCHEMA_VERSION):
            raise HarnessError(f"store {self.store.url}: human tables schema_version {version!r} is not "
                               f"{HUMAN_SCHEMA_VERSION}")

    def session_key(self) -> str:
        import os

        env = os.environ.get(auth.SECRET_ENV)
        if env:
            return env
        with self.engine.connect() as conn:
            value = conn.execute(select(human_info.c.value).where(human_info.c.key == "session_key")).scalar()
        if not value:  # pragma: no cover - _create wrote it
            raise HarnessError("the store has no session key")
        return str(value)

    # -- campaigns ------------------------------------------------------------------------

    def add_campaign(self, spec: CampaignSpec, drafts: Sequence[ItemDraft], created_by: str | None = None) -> Campaign:
        unique: dict[str, ItemDraft] = {}
        for d in drafts:  # the same answer reached twice (e.g. two identical runs) is one item
            unique.setdefault(d.item_key, d)
        drafts = list(unique.values())
        fingerprint = stable_hash({"protocol": spec.protocol, "dimensions": spec.dimensions,
                                   "items": sorted(d.item_key for d in drafts)})
        try:
            with self.store.transaction() as conn:
                result = conn.execute(campaigns_table.insert().values(
                    name=spec.name, protocol=spec.protocol, spec=spec.model_dump_json(), fingerprint=fingerprint,
                    created_at=now(), created_by=created_by))
                cid = int(result.inserted_primary_key[0])  # type: ignore[index]
                conn.execute(items_table.insert(), [
                    dict(campaign_id=cid, ordinal=i, kind=d.kind, item_key=d.item_key, task_key=d.task_key,
                         sample_id=d.sample_id, payload=json.dumps(d.payload(), ensure_ascii=False))
                    for i, d in enumerate(drafts)])
        except IntegrityError:
            raise HarnessError(f"a campaign named {spec.name!r} already exists") from None
        return self.campaign(spec.name)

    def campaign(self, name: str) -> Campaign:
        with self.engine.connect() as conn:
            row = conn.execute(select(campaigns_table).where(campaigns_table.c.name == name)).mappings().first()
        if row is None:
            known = ", ".join(c.name for c in self.campaigns()) or "none"
            raise HarnessError(f"no campaign named {name!r} (campaigns: {known})")
        return campaign_from_row(row)

    def campaigns(self) -> list[Campaign]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(campaigns_table).order_by(campaigns_table.c.campaign_id)).mappings().all()
        return [campaign_from_row(r) for r in rows]

    def items(self, campaign: Campaign) -> list[Item]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(items_table).where(items_table.c.campaign_id == campaign.campaign_id)
                                .order_by(items_table.c.ordinal)).mappings().all()
        return [item_from_row(r) for r in rows]

    def item(self, item_id: int) -> Item:
        with self.engine.connect() as conn:
            row = conn.execute(select(items_table).where(items_table.c.item_id == item_id)).mappings().first()
        if row is None:
            raise HarnessError(f"no item {item_id}")
        return item_from_row(row)

    # -- annotators, invites and sessions -------------------------------------------------

    def invite(self, name: str, role: str, *, days: int = auth.INVITE_DAYS) -> tuple[Annotator, str]:
        """A new one-time sign-in token for `name` (created with `role` if new). Returns the
        token in clear: the only time it exists outside the person's link."""
        if role not in ROLES:
            raise HarnessError(f"role {role!r} is not one of {', '.join(ROLES)}")
        name = name.strip()
        if not name or len(name) > 128:
            raise HarnessError("an annotator needs a name of 1 to 128 characters")
        token = auth.new_token()
        now = datetime.now(UTC)
        with self.store.transaction() as conn:
            row = conn.execute(select(annotators_table).where(annotators_table.c.name == name)).mappings().first()
            if row is None:
                aid = int(conn.execute(annotators_table.insert().values(
                    name=name, role=role, created_at=now.isoformat())).inserted_primary_key[0])  # type: ignore[index]
            else:
                if row["role"] != role:
                    raise HarnessError(f"annotator {name!r} already exists with role {row['role']!r}")
                aid = int(row["annotator_id"])
            conn.execute(invites_table.insert().values(
                token_hash=auth.token_hash(token), annotator_id=aid, created_at=now.isoformat(),
                expires_at=(now + timedelta(days=days)).isoformat()))
        return Annotator(aid, name, role), token

    def annotators(self) -> list[Annotator]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(annotators_table).order_by(annotators_table.c.annotator_id)).mappings().all()
        return [Annotator(r["annotator_id"], r["name"], r["role"]) for r in rows]

    def annotator(self, annotator_id: int) -> Annotator | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(annotators_table).where(annotators_table.c.annotator_id == annotator_id)
                             ).mappings().first()
        return None if r is None else Annotator(r["annotator_id"], r["name"], r["role"])

    def invite_valid(self, token: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(select(invites_table).where(invites_table.c.token_hash == auth.token_hash(token))
                               ).mappings().first()
        return row is not None and row["used_at"] is None and row["expires_at"] > now()

    def redeem(self, token: str, *, hours: int = auth.SESSION_HOURS) -> tuple[Annotator, str] | None:
        """Consume a one-time token; returns the annotator and a new session id, or None."""
        now = datetime.now(UTC)
        session_id = auth.new_token()
        with self.store.transaction() as conn:
            row = conn.execute(select(invites_table).where(invites_table.c.token_hash == auth.token_hash(token))
                               ).mappings().first()
            if row is None or row["used_at"] is not None or row["expires_at"] <= now.isoformat():
                return None
            done = conn.execute(invites_table.update().where(invites_table.c.token_hash == row["token_hash"])
                                .where(invites_table.c.used_at.is_(None)).values(used_at=now.isoformat()))
            if done.rowcount != 1:
                return None
            conn.execute(sessions_table.insert().values(
                session_hash=auth.token_hash(session_id), annotator_id=row["annotator_id"],
                created_at=now.isoformat(), expires_at=(now + timedelta(hours=hours)).isoformat()))
        who = self.annotator(int(row["annotator_id"]))
        return None if who is None else (who, session_id)

    def session_annotator(self, session_id: str | None) -> Annotator | None:
        if not session_id:
            return None
        s, a = sessions_table, annotators_table
        with self.engine.connect() as conn:
            row = conn.execute(select(s.c.expires_at, a.c.annotator_id, a.c.name, a.c.role)
                               .join(a, a.c.annotator_id == s.c.annotator_id)
                               .where(s.c.session_hash == auth.token_hash(session_id))).mappings().first()
        if row is None or row["expires_at"] <= now():
            return None
        return Annotator(row["annotator_id"], row["name"], row["role"])

    def end_session(self, session_id: str | None) -> None:
        if session_id:
            with self.store.transaction() as conn:
                digest = auth.token_hash(session_id)
                conn.execute(sessions_table.delete().where(sessions_table.c.session_hash == digest))

    # -- queues ---------------------------------------------------------------------------

    def can_annotate(self, campaign: Campaign, who: Annotator) -> bool:
        if who.role not in campaign.spec.roles:
            return False
        protocol = campaign.protocol
        if protocol.name in ("pointwise", "pairwise"):
            sample: dict[str, Any] = {"rubric": []}
            return bool(protocol.questions(campaign.spec.dimensions, who.role, sample))
        return True

    def queue(self, campaign: Campaign, who: Annotator) -> list[Assignment]:
        """The annotator's assignments in their order, allocated on first call."""
        existing = self.assignments(campaign, who)
        if existing or not self.can_annotate(campaign, who):
            return existing
        with self.store.transaction() as conn:
            self._allocate(conn, campaign, who)
        return self.assignments(campaign, who)

    def assignments(self, campaign: Campaign, who: Annotator) -> list[Assignment]:
        """The annotator's queue as allocated so far (empty before their first visit)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(assignments_table).where(
                assignments_table.c.campaign_id == campaign.campaign_id,
                assignments_table.c.annotator_id == who.annotator_id).order_by(assignments_table.c.position)
            ).mappings().all()
        return [assignment_from_row(r) for r in rows]

    def _allocate(self, conn: Connection, campaign: Campaign, who: Annotator) -> None:
        a = assignments_table
        if conn.execute(select(func.count()).select_from(a).where(
                a.c.campaign_id == campaign.campaign_id, a.c.annotator_id == who.annotator_id)).scalar():
            return  # allocated meanwhile by another request of the same person
        items = [item_from_row(r) for r in conn.execute(select(items_table).where(
            items_table.c.campaign_id == campaign.campaign_id).order_by(items_table.c.ordinal)).mappings()]
        same_role = select(annotators_table.c.annotator_id).where(annotators_table.c.role == who.role)
        counts: dict[int, int] = dict(conn.execute(select(a.c.item_id, func.count()).where(
            a.c.campaign_id == campaign.campaign_id, a.c.annotator_id.in_(same_role)).group_by(a.c.item_id)).all())
        rng = random.Random(stable_hash([campaign.spec.seed, campaign.fingerprint, who.annotator_id]))
        regular = [i for i in items if not i.is_gold and counts.get(i.item_id, 0) < campaign.spec.per_item]
        rng.shuffle(regular)  # ties among equally covered items broken at random, per annotator
        regular.sort(key=lambda i: counts.get(i.item_id, 0))
        if campaign.spec.items_per_annotator is not None:
            regular = regular[: campaign.spec.items_per_annotator]
        chosen = regular + [i for i in items if i.is_gold]
        rng.shuffle(chosen)
        rows = []
        for pos, item in enumerate(chosen, 1):
            order = list(range(len(item.payload["answers"])))
            rng.shuffle(order)
            rows.append(dict(campaign_id=campaign.campaign_id, annotator_id=who.annotator_id, item_id=item.item_id,
                             position=pos, display=json.dumps(order)))
        if rows:
            conn.execute(a.insert(), rows)

    def assignment(self, campaign: Campaign, who: Annotator, position: int) -> Assignment | None:
        """The annotator's own assignment at `position`; None for anyone else's."""
        with self.engine.connect() as conn:
            row = conn.execute(select(assignments_table).where(
                assignments_table.c.campaign_id == campaign.campaign_id,
                assignments_table.c.annotator_id == who.annotator_id,
                assignments_table.c.position == position)).mappings().first()
        return None if row is None else assignment_from_row(row)


    # -- labels ---------------------------------------------------------------------------

    def label(self, assignment: Assignment) -> Label | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(labels_table).where(
                labels_table.c.assignment_id == assignment.assignment_id)).mappings().first()
        return None if row is None else label_from_row(row)

    def submit(self, campaign: Campaign, who: Annotator, assignment: Assignment, values: dict[str, Any],
               comment: str | None, *, shown_at: float | None = None, at: float | None = None) -> Label:
        """Store (or revise) the annotator's label on their own assignment; `shown_at` (unix
        time the item was served, if known) gives the time spent, added over revisions."""
        if assignment.annotator_id != who.annotator_id or assignment.campaign_id != campaign.campaign_id:
            raise HarnessError("an annotator can label only their own assignments")
        now = at or time.time()
        with self.store.transaction() as conn:
            spent = None if shown_at is None else max(0.0, min(MAX_SECONDS_PER_VISIT, now - float(shown_at)))
            old = conn.execute(select(labels_table).where(
                labels_table.c.assignment_id == assignment.assignment_id)).mappings().first()
            stamp = datetime.fromtimestamp(now, UTC).isoformat()
            item_key = conn.execute(select(items_table.c.item_key).where(
                items_table.c.item_id == assignment.item_id)).scalar()
            if old is None:
                conn.execute(labels_table.insert().values(
                    assignment_id=assignment.assignment_id, campaign_id=campaign.campaign_id,
                    item_id=assignment.item_id, item_key=item_key, annotator_id=who.annotator_id,
                    annotator=who.name, role=who.role, protocol=campaign.protocol_name,
                    campaign_fingerprint=campaign.fingerprint, values=json.dumps(values, sort_keys=True),
                    comment=comment or None, seconds=spent, revision=1, created_at=stamp, updated_at=stamp))
            else:
                total = (old["seconds"] or 0.0) + (spent or 0.0) if (old["seconds"] is not None or spent) else None
                conn.execute(labels_table.update().where(labels_table.c.label_id == old["label_id"]).values(
                    values=json.dumps(values, sort_keys=True), comment=comment or None, seconds=total,
                    revision=old["revision"] + 1, updated_at=stamp))
        got = self.label(assignment)
        assert got is not None
        return got

    def labels(self, campaign: Campaign) -> list[Label]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(labels_table).where(labels_table.c.campaign_id == campaign.campaign_id)
                                .order_by(labels_table.c.label_id)).mappings().all()
        return [label_from_row(r) for r in rows]

    def my_labels(self, campaign: Campaign, who: Annotator) -> dict[int, Label]:
        """assignment id -> the annotator's own label."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(labels_table).where(
                labels_table.c.campaign_id == campaign.campaign_id,
                labels_table.c.annotator_id == who.annotator_id)).mappings().all()
        return {r["assignment_id"]: label_from_row(r) for r in rows}

    def progress(self, campaign: Campaign) -> dict[str, int]:
        with self.engine.connect() as conn:
            n_assigned = conn.execute(select(func.count()).select_from(assignments_table).where(
                assignments_table.c.campaign_id == campaign.campaign_id)).scalar() or 0
            n_labels = conn.execute(select(func.count()).select_from(labels_table).where(
                labels_table.c.campaign_id == campaign.campaign_id)).scalar() or 0
            n_items = conn.execute(select(func.count()).select_from(items_table).where(
                items_table.c.campaign_id == campaign.campaign_id)).scalar() or 0
        return {"items": int(n_items), "assigned": int(n_assigned), "labels": int(n_labels)}


def create_campaign(store: str | Path | AnnotationStore, spec: CampaignSpec, *, import_runs: bool = True,
                    created_by: str | None = None) -> Campaign:
    """Build the items of `spec` from its runs, import the runs into the results store, and
    store the campaign."""
    from judges.human.campaigns import load_drafts

    drafts, runs = load_drafts(spec)
    owned = not isinstance(store, AnnotationStore)
    db = AnnotationStore(store) if not isinstance(store, AnnotationStore) else store
    try:
        if import_runs:
            for run in runs:
                db.store.import_run(run.path)
        return db.add_campaign(spec, drafts, created_by)
    finally:
        if owned:
            db.close()
