"""The values of human evaluation as the app and the report see them: campaigns, items,
annotators, assignments and labels, and their construction from table rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from judges.human.campaigns import CampaignSpec
from judges.human.protocols import PROTOCOLS, HumanProtocol


def now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class Campaign:
    campaign_id: int
    name: str
    protocol_name: str
    spec: CampaignSpec
    fingerprint: str
    created_at: str

    @property
    def protocol(self) -> HumanProtocol:
        return PROTOCOLS.get(self.protocol_name)


@dataclass(frozen=True)
class Item:
    item_id: int
    campaign_id: int
    ordinal: int
    kind: str
    item_key: str
    task_key: str | None
    sample_id: str | None
    payload: dict[str, Any]

    @property
    def is_gold(self) -> bool:
        return self.kind == "gold"


@dataclass(frozen=True)
class Annotator:
    annotator_id: int
    name: str
    role: str


@dataclass(frozen=True)
class Assignment:
    assignment_id: int
    campaign_id: int
    annotator_id: int
    item_id: int
    position: int
    display: tuple[int, ...]


@dataclass(frozen=True)
class Label:
    label_id: int
    assignment_id: int
    campaign_id: int
    item_id: int
    item_key: str
    annotator_id: int
    annotator: str
    role: str
    protocol: str
    campaign_fingerprint: str
    values: dict[str, Any]
    comment: str | None
    seconds: float | None
    revision: int
    created_at: str
    updated_at: str


def campaign_from_row(row: Any) -> Campaign:
    return Campaign(row["campaign_id"], row["name"], row["protocol"], CampaignSpec.model_validate_json(row["spec"]),
                    row["fingerprint"], row["created_at"])


def item_from_row(row: Any) -> Item:
    return Item(row["item_id"], row["campaign_id"], row["ordinal"], row["kind"], row["item_key"], row["task_key"],
                row["sample_id"], json.loads(row["payload"]))


def assignment_from_row(row: Any) -> Assignment:
    return Assignment(row["assignment_id"], row["campaign_id"], row["annotator_id"], row["item_id"], row["position"],
                      tuple(json.loads(row["display"])))


def label_from_row(row: Any) -> Label:
    return Label(row["label_id"], row["assignment_id"], row["campaign_id"], row["item_id"], row["item_key"],
                 row["annotator_id"], row["annotator"], row["role"], row["protocol"], row["campaign_fingerprint"],
                 json.loads(row["values"]), row["comment"], row["seconds"], row["revision"], row["created_at"],
                 row["updated_at"])


