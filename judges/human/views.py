"""What an annotator's page shows of an item: built from the stored item, the annotator's
assignment and label, with nothing that names a model (the item's run and model fields never
enter the page context before a case study is submitted)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from judges.human.campaigns import model_labels, prompt_messages
from judges.human.entities import Annotator, Assignment, Campaign, Item, Label
from judges.human.protocols import Question

SPEAKERS = {"user": "Patient / user", "assistant": "Doctor / assistant", "system": "Instructions"}


@dataclass(frozen=True)
class ShownAnswer:
    label: str  # "A", "B" or "Answer 1", ...
    text: str


@dataclass(frozen=True)
class Reveal:
    label: str
    model_name: str


@dataclass(frozen=True)
class ItemView:
    campaign: str
    protocol: str
    position: int
    total: int
    done: int
    turns: list[dict[str, str]]
    answers: list[ShownAnswer]
    questions: list[Question]
    values: dict[str, str]  # form field -> prefilled value
    comment: str
    comment_label: str
    comment_required: bool
    revision: int
    reveal: list[Reveal]
    errors: list[str]
    prev_position: int | None
    next_position: int | None


def answer_labels(protocol: str, n: int) -> list[str]:
    return ["A", "B"][:n] if protocol == "pairwise" and n <= 2 else [f"Answer {k}" for k in range(1, n + 1)]


def item_view(campaign: Campaign, who: Annotator, item: Item, assignment: Assignment, label: Label | None,
              queue: Sequence[Assignment], done: int, *, form: dict[str, Any] | None = None,
              errors: Sequence[str] = ()) -> ItemView:
    protocol = campaign.protocol
    answers = item.payload["answers"]
    labels = answer_labels(protocol.name, len(answers))
    shown = [ShownAnswer(labels[k], str(answers[i]["text"])) for k, i in enumerate(assignment.display)]
    questions = protocol.questions(campaign.spec.dimensions, who.role, item.payload)
    if form is not None:  # a refused submission: show what was sent
        values = {q.field: str(form.get(q.field, "")) for q in questions}
        comment = str(form.get("comment", ""))
    elif label is not None:
        values = protocol.shown_values(label.values, assignment.display)
        comment = label.comment or ""
    else:
        values, comment = {}, ""
    reveal = []
    if label is not None and protocol.reveals_models:
        names = model_labels([item])  # models sharing a name are told apart (e.g. dtype=bfloat16)
        reveal = [Reveal(labels[k], names[answers[i]["model_fingerprint"]]) for k, i in enumerate(assignment.display)]
    positions = [a.position for a in queue]
    here = positions.index(assignment.position)
    return ItemView(
        campaign=campaign.name, protocol=protocol.name, position=assignment.position, total=len(queue), done=done,
        turns=[{"speaker": SPEAKERS.get(t["role"], t["role"]), "role": t["role"], "content": t["content"]}
               for t in prompt_messages(item.payload.get("prompt"))],
        answers=shown, questions=questions, values=values, comment=comment, comment_label=protocol.comment_label,
        comment_required=protocol.comment_required, revision=label.revision if label else 0, reveal=reveal,
        errors=list(errors), prev_position=positions[here - 1] if here > 0 else None,
        next_position=positions[here + 1] if here + 1 < len(positions) else None,
    )
