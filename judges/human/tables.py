"""Tables of the human-evaluation campaigns (SQLAlchemy Core), kept beside the results store's
own tables on the same database (leaderboard/tables.py is not touched: these have their own
MetaData and their own schema version, and are created when missing).

What lives where:
- human_campaigns: one row per campaign (protocol, creation spec, fingerprint).
- human_items: what is judged. `payload` holds the question, the answers and, server-side
  only, which run and model wrote each answer; pages never render the model fields before
  the annotator has submitted.
- human_annotators, human_invites (one-time tokens, stored as sha256 only), human_sessions
  (signed-cookie session ids, stored as sha256 only).
- human_assignments: an annotator's queue: randomised position, the display order of the
  answers (pairwise left/right, case-study order).
- human_labels: one row per (assignment): values, comment, seconds spent, revision count,
  annotator, role, campaign and item fingerprint, so a label stands on its own.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

HUMAN_SCHEMA_VERSION = 1

metadata = MetaData()

human_info = Table(
    "human_info", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
campaigns_table = Table(
    "human_campaigns", metadata,
    Column("campaign_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("protocol", String(32), nullable=False),
    Column("spec", Text, nullable=False),  # JSON: CampaignSpec
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("created_by", String(128)),
)
items_table = Table(
    "human_items", metadata,
    Column("item_id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, ForeignKey("human_campaigns.campaign_id"), nullable=False, index=True),
    Column("ordinal", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # "item" or "gold"
    Column("item_key", String(64), nullable=False),  # fingerprint of what is judged
    Column("task_key", Text),
    Column("sample_id", Text),
    Column("payload", Text, nullable=False),  # JSON
    UniqueConstraint("campaign_id", "item_key", name="uq_human_item"),
)
annotators_table = Table(
    "human_annotators", metadata,
    Column("annotator_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # expert, lay or admin
    Column("created_at", String(40), nullable=False),
)
invites_table = Table(
    "human_invites", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("annotator_id", Integer, ForeignKey("human_annotators.annotator_id"), nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
    Column("used_at", String(40)),
)
sessions_table = Table(
    "human_sessions", metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("annotator_id", Integer, ForeignKey("human_annotators.annotator_id"), nullable=False, index=True),
    Column("created_at", String(40), nullable=False),
    Column("expires_at", String(40), nullable=False),
)
assignments_table = Table(
    "human_assignments", metadata,
    Column("assignment_id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, ForeignKey("human_campaigns.campaign_id"), nullable=False),
    Column("annotator_id", Integer, ForeignKey("human_annotators.annotator_id"), nullable=False),
    Column("item_id", Integer, ForeignKey("human_items.item_id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),  # 1-based, in this annotator's queue
    Column("display", Text, nullable=False),  # JSON list: answer indexes in display order
    UniqueConstraint("campaign_id", "annotator_id", "item_id", name="uq_human_assignment_item"),
    UniqueConstraint("campaign_id", "annotator_id", "position", name="uq_human_assignment_position"),
)
labels_table = Table(
    "human_labels", metadata,
    Column("label_id", Integer, primary_key=True, autoincrement=True),
    Column("assignment_id", Integer, ForeignKey("human_assignments.assignment_id"), nullable=False, unique=True),
    Column("campaign_id", Integer, ForeignKey("human_campaigns.campaign_id"), nullable=False, index=True),
    Column("item_id", Integer, ForeignKey("human_items.item_id"), nullable=False),
    Column("item_key", String(64), nullable=False),
    Column("annotator_id", Integer, ForeignKey("human_annotators.annotator_id"), nullable=False, index=True),
    Column("annotator", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("protocol", String(32), nullable=False),
    Column("campaign_fingerprint", String(64), nullable=False),
    Column("values", Text, nullable=False),  # JSON; pairwise sides in item order (x = answer 0)
    Column("comment", Text),
    Column("seconds", Float),  # time on the item, summed over revisions
    Column("revision", Integer, nullable=False),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
)
