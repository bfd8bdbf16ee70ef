"""The annotation app without a browser: campaigns from runs, queues (K per item, random order
and placement), invites and sessions, the HTTP pages (FastAPI's TestClient) with their security
rules, reports, exports, calibration against the labels, and the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any, cast

import pytest
from annotate_support import PLANTED_SCRIPT, csrf_of, hidden_fields, make_run, sign_in
from conftest import ScriptedBackend

from harness.errors import HarnessError
from harness.types import GenerationRequest, ModelBackend
from judges.human.annotations import AnnotationStore, Campaign, create_campaign
from judges.human.campaigns import make_spec
from judges.human.protocols import DIMENSIONS, LAY_DIMENSIONS

fastapi = pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from judges.human.app import create_app  # noqa: E402

ANSWERS_A = ["Drink water and rest.", "Take paracetamol.", PLANTED_SCRIPT, "See a doctor today.", None]
ANSWERS_B = ["Rest, fluids, and come back if worse.", "Ibuprofen with food.", "No idea.", "Go to A&E.", "Okay."]


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return (make_run(tmp_path / "run-a", ANSWERS_A, model_fp="weights|dtype=float32", name="smol"),
            make_run(tmp_path / "run-b", ANSWERS_B, model_fp="weights|dtype=bfloat16", name="smol"))


@pytest.fixture
def db(tmp_path: Path) -> AnnotationStore:
    return AnnotationStore(tmp_path / "store.sqlite")


def _campaign(db: AnnotationStore, runs: tuple[Path, Path], name: str, protocol: str, **kw: Any) -> Campaign:
    return create_campaign(db, make_spec(name, list(runs), protocol, **kw))


def test_items_per_protocol(db: AnnotationStore, runs: tuple[Path, Path], tmp_path: Path) -> None:
    point = _campaign(db, runs, "p", "pointwise")
    # run A's sample 4 failed: 4 + 5 answers; the runs are imported into the results store
    assert len(db.items(point)) == 9 and {r.model_fingerprint for r in db.store.runs()} == {
        "weights|dtype=float32", "weights|dtype=bfloat16"}
    assert point.spec.dimensions == list(DIMENSIONS) and point.spec.roles == ["expert", "lay"]
    pair = _campaign(db, runs, "pw", "pairwise")
    items = db.items(pair)
    assert len(items) == 4 and all(len(i.payload["answers"]) == 2 for i in items)  # sample 4: one side missing
    assert pair.spec.dimensions == ["overall"]
    case = _campaign(db, runs, "cs", "case-study", limit=2)
    assert len(db.items(case)) == 2
    with pytest.raises(HarnessError, match="already exists"):
        _campaign(db, runs, "p", "pointwise")
    with pytest.raises(HarnessError, match="unknown dimension 'kind'"):
        make_spec("x", list(runs), "pointwise", dimensions=["kind"])
    with pytest.raises(HarnessError, match="no sample of these runs carries rubric"):
        _campaign(db, runs, "r", "rubric")
    with pytest.raises(HarnessError, match="needs at least 2 runs"):
        _campaign(db, runs[:1], "one", "pairwise")  # type: ignore[arg-type]


def test_rubric_items_from_metadata_and_fallback_file(db: AnnotationStore, tmp_path: Path) -> None:
    rubric = [{"criterion": "Advises urgent care for chest pain", "points": 5},
              {"criterion": "Recommends antibiotics", "points": -3}]
    run = make_run(tmp_path / "rub", ["a", "b", "c"], model_fp="m", rubrics=[rubric, None, None])
    fallback = tmp_path / "rubric.jsonl"
    fallback.write_text(json.dumps({"sample_id": "mts-1", "rubric": [{"criterion": "Asks about fever",
                                                                      "points": 2}]}) + "\n")
    c = create_campaign(db, make_spec("rub", [run], "rubric", rubric=fallback))
    items = {i.sample_id: i for i in db.items(c)}
    assert set(items) == {"mts-0", "mts-1"}  # mts-2 has no rubric anywhere
    assert items["mts-0"].payload["rubric"][1] == {"criterion": "Recommends antibiotics", "points": -3}
    assert items["mts-1"].payload["rubric"][0]["criterion"] == "Asks about fever"
    assert c.spec.roles == ["expert"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sample_id": "mts-1", "rubric": [{"points": 2}]}) + "\n")
    with pytest.raises(HarnessError, match=r"bad\.jsonl:1: rubric item 0: needs a 'criterion'"):
        create_campaign(db, make_spec("rub2", [run], "rubric", rubric=bad))


def test_queues_k_per_role_random_order_and_placement(db: AnnotationStore, runs: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"prompt": "I have crushing chest pain.", "answers": ["Call an ambulance now.",
                                                                                     "Sleep it off."],
                                "expected": {"overall": 1}}) + "\n")
    c = _campaign(db, runs, "pw", "pairwise", per_item=1, gold=gold)
    people = [db.invite(f"e{k}", "expert")[0] for k in range(3)] + [db.invite("lay1", "lay")[0]]
    queues = {p.name: db.queue(c, p) for p in people}
    regular = {i.item_id for i in db.items(c) if not i.is_gold}
    gold_id = next(i.item_id for i in db.items(c) if i.is_gold)
    # K=1 per role: the 4 items go to e0 (first come), nothing regular is left for e1, e2; the lay
    # annotator has their own K; everyone gets the gold item
    expert_items = [a.item_id for n in ("e0", "e1", "e2") for a in queues[n] if a.item_id != gold_id]
    assert sorted(expert_items) == sorted(regular)
    assert {a.item_id for a in queues["lay1"]} == regular | {gold_id}
    assert all(gold_id in {a.item_id for a in q} for q in queues.values())
    assert db.queue(c, people[0]) == queues["e0"]  # allocated once
    # items per annotator caps queues; positions are a random order; placements are stored
    c2 = _campaign(db, runs, "pw2", "pairwise", per_item=2, items_per_annotator=2)
    q = [db.queue(c2, p) for p in people[:3]]
    assert [len(x) for x in q] == [2, 2, 2]
    counts: dict[int, int] = {}
    for x in q:
        for a in x:
            counts[a.item_id] = counts.get(a.item_id, 0) + 1
    assert max(counts.values()) <= 2 and sum(counts.values()) == 6
    c3 = _campaign(db, runs, "pw3", "pairwise", per_item=5)
    orders = {p.name: [a.item_id for a in db.queue(c3, p)] for p in people[:3]}
    placements = {a.display for p in people[:3] for a in db.queue(c3, p)}
    assert len({tuple(o) for o in orders.values()}) > 1 and placements == {(0, 1), (1, 0)}


def test_invites_are_one_time_and_stored_hashed(db: AnnotationStore, tmp_path: Path) -> None:
    who, token = db.invite("Dr. Grey", "expert")
    got = db.redeem(token)
    assert got is not None and got[0] == who
    assert db.session_annotator(got[1]) == who
    assert db.redeem(token) is None  # once only
    with pytest.raises(HarnessError, match="already exists with role 'expert'"):
        db.invite("Dr. Grey", "lay")
    raw = (tmp_path / "store.sqlite").read_bytes()
    assert token.encode() not in raw and got[1].encode() not in raw
    db.end_session(got[1])
    assert db.session_annotator(got[1]) is None


# -- HTTP -----------------------------------------------------------------------------------


def _client(db: AnnotationStore) -> TestClient:
    return TestClient(create_app(db))


def _signed_in(db: AnnotationStore, name: str, role: str) -> TestClient:
    client = _client(db)
    sign_in(client, db.invite(name, role)[1])
    return client


def _submit(client: TestClient, path: str, data: dict[str, str], **kw: Any) -> Any:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(path, data={**hidden_fields(page.text), **data}, follow_redirects=False, **kw)


def test_every_post_refuses_a_missing_or_wrong_csrf_token(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    _campaign(db, runs, "pw", "pairwise")
    client = _signed_in(db, "admin", "admin")
    expert = _signed_in(db, "e", "expert")
    expert.get("/c/pw")
    posts = sorted({r.path for r in client.app.routes if "POST" in getattr(r, "methods", set())})  # type: ignore[attr-defined]
    assert posts == ["/admin/campaigns", "/admin/invites", "/c/{name}/i/{position}", "/signin", "/signout"]
    for path in posts:
        url = path.replace("{name}", "pw").replace("{position}", "1")
        for c in (client, expert):
            for data in ({}, {"csrf": "forged"}):
                r = c.post(url, data={**data, "name": "x", "role": "lay", "cmp:overall": "A", "comment": "r"})
                assert r.status_code == 403 and "CSRF" in r.text, (url, r.status_code)
    assert db.progress(db.campaign("pw"))["labels"] == 0 and [a.name for a in db.annotators()] == ["admin", "e"]


def test_pairwise_page_hides_models_and_escapes_answers(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    c = _campaign(db, runs, "pw", "pairwise")
    client = _signed_in(db, "e", "expert")
    r = client.get("/c/pw", follow_redirects=True)
    assert r.status_code == 200
    assert r.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
    pages = [client.get(f"/c/pw/i/{k}").text for k in range(1, 5)]
    secret = {"smol", "weights", "float32", "bfloat16", *(r.run_id for r in db.store.runs()),
              *(r.run_key for r in db.store.runs())}
    for html in pages:
        for s in secret:
            assert s not in html, s
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/htmx.min.js">']
    joined = "\n".join(pages)
    assert "&lt;script&gt;window.__pwned = 1;" in joined and "<script>window" not in joined
    # the answers' placement matches the stored display order
    a = db.queue(c, db.annotators()[0])[0]
    item = db.item(a.item_id)
    left = item.payload["answers"][a.display[0]]["text"]
    html = pages[0]
    assert html.index('data-label="A"') < html.index(left.replace("&", "&amp;").replace("<", "&lt;")
                                                      .replace('"', "&#34;").replace(">", "&gt;"))


def test_label_roundtrip_resume_change_and_sides(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    c = _campaign(db, runs, "pw", "pairwise")
    client = _signed_in(db, "e", "expert")
    who = db.annotators()[0]
    queue = db.queue(c, who)
    assert client.get("/c/pw", follow_redirects=False).headers["location"] == "/c/pw/i/1"
    # missing reason: refused with the reason, nothing stored
    r = _submit(client, "/c/pw/i/1", {"cmp:overall": "A", "comment": " "})
    assert r.status_code == 400 and "please write reason for your choice" in r.text
    r = _submit(client, "/c/pw/i/1", {"cmp:overall": "A", "comment": "A is safer"})
    assert r.status_code == 303 and r.headers["location"] == "/c/pw/i/2"
    [label] = db.labels(c)
    # "A" is whichever answer was shown left: stored as the item's own side
    assert label.values == {"overall": "x" if queue[0].display[0] == 0 else "y"}
    assert label.role == "expert" and label.annotator == "e" and label.item_key == db.item(queue[0].item_id).item_key
    assert label.seconds is not None and 0 <= label.seconds < 60
    assert client.get("/c/pw", follow_redirects=False).headers["location"] == "/c/pw/i/2"  # resume
    # change it: the page shows my label, the update is a new revision
    page = client.get("/c/pw/i/1").text
    assert 'value="A" checked' in page and "revision 1" in page and "A is safer" in page
    r = _submit(client, "/c/pw/i/1", {"cmp:overall": "tie", "comment": "on reflection, the same"})
    [label] = db.labels(c)
    assert label.values == {"overall": "tie"} and label.revision == 2
    # htmx: the next item comes back as a fragment, and the URL is pushed
    r = _submit(client, "/c/pw/i/2", {"cmp:overall": "both_bad", "comment": "neither"},
                headers={"HX-Request": "true"})
    assert r.status_code == 200 and r.text.lstrip().startswith("<section id=\"item\"")
    assert r.headers["HX-Push-Url"] == "/c/pw/i/3" and 'id="saved"' in r.text
    labels = client.get("/c/pw/labels").text
    assert "2 of 4 items labelled" in labels


def test_annotators_cannot_reach_each_others_labels(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    c = _campaign(db, runs, "pw", "pairwise", per_item=1, items_per_annotator=2)
    alice, bob = _signed_in(db, "alice", "expert"), _signed_in(db, "bob", "expert")
    _submit(alice, "/c/pw/i/1", {"cmp:overall": "A", "comment": "ALICE-SECRET-REASON"})
    bob.get("/c/pw")
    # bob's position 1 is his own item, not alice's; positions past his queue do not exist
    assert "ALICE-SECRET-REASON" not in bob.get("/c/pw/i/1").text
    assert "ALICE-SECRET-REASON" not in bob.get("/c/pw/labels").text
    assert bob.get("/c/pw/i/3").status_code == 404
    r = bob.post("/c/pw/i/3", data={"csrf": csrf_of(bob.get("/c/pw/i/1").text), "cmp:overall": "B", "comment": "x"})
    assert r.status_code == 404
    # admin pages and exports need the admin role
    for path in ("/admin", "/admin/c/pw", "/admin/c/pw/export?format=labels"):
        assert bob.get(path).status_code == 403
    anonymous = _client(db)
    assert anonymous.get("/c/pw/i/1", follow_redirects=False).status_code == 303
    assert anonymous.get("/admin/c/pw/export").status_code in (303, 200) and "ALICE" not in anonymous.get(
        "/admin/c/pw/export").text
    [label] = db.labels(c)
    assert label.annotator == "alice" and label.revision == 1


def test_lay_annotators_see_only_patient_friendly_and_fluent(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    _campaign(db, runs, "p", "pointwise")
    lay, expert = _signed_in(db, "pat", "lay"), _signed_in(db, "doc", "expert")
    lay_page = lay.get("/c/p", follow_redirects=True).text
    asked = re.findall(r'name="dim:([a-z-]+)"', lay_page)
    assert sorted(set(asked)) == sorted(LAY_DIMENSIONS)
    assert "dim:safe" not in lay_page and DIMENSIONS["safe"] not in lay_page
    expert_page = expert.get("/c/p", follow_redirects=True).text
    assert sorted(set(re.findall(r'name="dim:([a-z-]+)"', expert_page))) == sorted(DIMENSIONS)
    # a lay annotator posting a safety score has it ignored, not stored
    r = _submit(lay, "/c/p/i/1", {"dim:patient-friendly": "4", "dim:fluent": "5", "dim:safe": "1"})
    assert r.status_code == 303
    [label] = db.labels(db.campaign("p"))
    assert label.values == {"patient-friendly": 4, "fluent": 5}
    # a lay-only view of a safety-only campaign is not offered at all
    _campaign(db, runs, "safety", "pointwise", dimensions=["safe"])
    assert "safety" not in lay.get("/").text and lay.get("/c/safety").status_code == 404


def test_case_study_reveals_models_only_after_submitting(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    _campaign(db, runs, "cs", "case-study")
    client = _signed_in(db, "doc", "expert")
    before = client.get("/c/cs", follow_redirects=True).text
    assert "smol" not in before and "written by" not in before and "Answer 2" in before
    r = _submit(client, "/c/cs/i/1", {"comment": "B is more complete <b>bold</b>"})
    assert r.status_code == 303 and r.headers["location"] == "/c/cs/i/1"
    after = client.get("/c/cs/i/1").text
    # two runs of one model name are told apart by their backend arguments
    assert after.count("written by") == 2 and "smol (dtype=float32)" in after and "smol (dtype=bfloat16)" in after
    assert "&lt;b&gt;bold&lt;/b&gt;" in after


def test_access_log_redacts_sign_in_tokens(db: AnnotationStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="judges.human.access")
    client = _client(db)
    _, token = db.invite("x", "expert")
    sign_in(client, token)
    text = caplog.text
    assert "/signin/[redacted]" in text and token not in text


def test_admin_creates_campaigns_and_invites_through_forms(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    for r in runs:
        db.store.import_run(r)
    admin = _signed_in(db, "root", "admin")
    page = admin.get("/admin").text
    keys = re.findall(r'name="runs" value="([0-9a-f]+)"', page)
    assert len(keys) == 2
    resp = admin.post("/admin/campaigns", data={"csrf": csrf_of(page), "name": "web", "protocol": "pairwise",
                                             "runs": keys, "per_item": "2"}, follow_redirects=False)
    assert resp.status_code == 303
    assert db.campaign("web").spec.protocol == "pairwise" and len(db.items(db.campaign("web"))) == 4
    resp = admin.post("/admin/campaigns", data={"csrf": csrf_of(page), "name": "bad name!",
                                                "protocol": "pointwise", "runs": keys})
    assert resp.status_code == 400 and "admin-error" in resp.text
    resp = admin.post("/admin/invites", data={"csrf": csrf_of(page), "name": "nurse", "role": "lay"})
    link = re.search(r'id="invite-link" value="([^"]+)"', resp.text)
    assert link and link.group(1).startswith("http://testserver/signin/")
    lay = _client(db)
    sign_in(lay, link.group(1).rsplit("/", 1)[1])
    assert "web" in lay.get("/").text
    report = admin.get("/admin/c/web")
    assert report.status_code == 200 and "Human win / tie / loss" in report.text


# -- reports, exports, calibration ----------------------------------------------------------


def _label_pairwise(db: AnnotationStore, c: Campaign, votes: dict[str, list[str]]) -> None:
    """votes[annotator] = the side each of their queue's items gets, in item order."""
    items = sorted(db.items(c), key=lambda i: i.ordinal)
    for name, sides in votes.items():
        who = db.invite(name, "expert")[0]
        by_item = {a.item_id: a for a in db.queue(c, who)}
        for item, side in zip(items, sides, strict=False):
            db.submit(c, who, by_item[item.item_id], {"overall": side}, f"{name} reason")


def test_pairwise_report_win_rates_agreement_and_exports(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    from judges.human.exports import export_rows, generic_results
    from judges.human.report import campaign_report

    c = _campaign(db, runs, "pw", "pairwise")
    _label_pairwise(db, c, {"a1": ["x", "x", "y", "tie"], "a2": ["x", "x", "y", "both_bad"]})
    report = campaign_report(db, "pw")
    [row] = report.data["pairwise"].values()
    assert row["n"] == 8 and row["model_x"] == "smol (dtype=float32)" and row["model_y"] == "smol (dtype=bfloat16)"
    assert row["x"]["value"] == pytest.approx(4 / 8) and row["y"]["value"] == pytest.approx(2 / 8)
    assert row["x"]["ci_method"] == "wilson" and row["x"]["ci"][0] < 0.5 < row["x"]["ci"][1]
    alpha = report.data["agreement"]["alpha"]["expert:overall"]
    assert 0.5 < alpha["alpha"] < 1 and alpha["units_pairable"] == 4
    kappa = report.data["agreement"]["kappa"]["expert:overall:a1|a2"]
    assert kappa["n"] == 4 and 0.5 < kappa["kappa"] < 1
    md = report.markdown()
    assert "Human win / tie / loss" in md and "Krippendorff" in md and "Cohen's kappa" in md
    mt = export_rows(db, "pw", "mt-bench")
    assert len(mt) == 8 and {r["winner"] for r in mt} == {"model_a", "model_b", "tie", "tie (bothbad)"}
    assert mt[0]["conversation_a"][-1]["role"] == "assistant" and mt[0]["judge"].startswith("expert_")
    llmbar = export_rows(db, "pw", "llmbar")
    assert sorted(r["label"] for r in llmbar) == [1, 1, 2]  # item 4 split tie / both bad: no majority
    assert set(llmbar[0]) == {"input", "output_1", "output_2", "label"} and "DOCTOR:" in llmbar[0]["input"]
    results = generic_results(db, "pw")
    assert {r.kind for r in results} == {"human_pairwise"} and len(results) == 2
    assert db.store.add_results(results) == 2 and db.store.add_results(results) == 0


def test_pointwise_report_means_by_role_and_gold_accuracy(db: AnnotationStore, runs: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    from judges.human.report import campaign_report

    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"prompt": "Chest pain radiating to the arm.", "answers": ["Just rest."],
                                "expected": {"safe": [1, 2], "fluent": 4}}) + "\n")
    c = _campaign(db, runs, "p", "pointwise", dimensions=["safe", "fluent"], gold=gold)
    gold_id = next(i.item_id for i in db.items(c) if i.is_gold)
    for name, role, score, gold_safe in (("d1", "expert", 4, 1), ("d2", "expert", 5, 5), ("l1", "lay", 2, None)):
        who = db.invite(name, role)[0]
        for a in db.queue(c, who):
            if a.item_id == gold_id:
                values = {"fluent": 4} if gold_safe is None else {"safe": gold_safe, "fluent": 4}
            else:
                values = {"fluent": score} if role == "lay" else {"safe": score, "fluent": score}
            db.submit(c, who, a, values, None)
    report = campaign_report(db, "p")
    means = report.data["means"]
    assert means["expert"]["smol (dtype=float32):safe"]["value"] == pytest.approx(4.5)
    assert means["lay"]["smol (dtype=bfloat16):fluent"]["value"] == 2.0
    assert "smol (dtype=float32):safe" not in means["lay"]
    gold_acc = report.data["gold_accuracy"]
    assert gold_acc["d1"]["value"] == 1.0 and gold_acc["d2"]["value"] == 0.0 and gold_acc["l1"]["value"] == 1.0
    assert report.data["agreement"]["alpha"]["expert:safe"]["alpha"] is not None
    assert report.n_gold == 1 and report.n_labels == (9 + 1) * 3  # 9 answers (run A's sample 4 failed) + gold


def test_rubric_report_and_grader_agreement(db: AnnotationStore, tmp_path: Path) -> None:
    from judges.human.calibrate import human_rubric_decisions, rubric_agreement
    from judges.human.report import campaign_report, rubric_score

    rubric = [{"criterion": "Mentions hydration", "points": 4}, {"criterion": "Suggests antibiotics", "points": -2},
              {"criterion": "Asks about duration", "points": 4}]
    run = make_run(tmp_path / "rub", ["Drink water. How long?", "Take antibiotics."], model_fp="m",
                   rubrics=[rubric, rubric])
    c = create_campaign(db, make_spec("rub", [run], "rubric"))
    for name in ("d1", "d2"):
        who = db.invite(name, "expert")[0]
        for a in db.queue(c, who):
            first = db.item(a.item_id).sample_id == "mts-0"
            db.submit(c, who, a, {"0": "met" if first else "not_met", "1": "not_met" if first else "met",
                                  "2": "met" if first or name == "d1" else "not_met"}, None)
    assert rubric_score(rubric, {"0": "met", "1": "not_met", "2": "met"}) == 1.0
    assert rubric_score(rubric, {"0": "not_met", "1": "met", "2": "not_met"}) == 0.0
    report = campaign_report(db, "rub")
    # mts-0: both 8/8; mts-1: d1 (-2 + 4) / 8, d2 -2 / 8 clipped to 0
    assert report.data["rubric"]["expert:default"]["score"]["value"] == pytest.approx((1 + 1 + 0.25 + 0) / 4)
    decisions = human_rubric_decisions(db, "rub")
    assert len(decisions) == 6 and [d["met"] for d in decisions if d["sample_id"] == "mts-1"] == [False, True, None]
    # a grader that says "met" when the criterion's first word appears in the answer
    got = rubric_agreement(db, "rub", lambda d: "antibiotics" in d["answer"].lower()
                           if "antibiotics" in d["criterion"].lower() else None if "duration" in d["criterion"]
                           else "water" in d["answer"].lower())
    assert got.n == 5 and got.agreement.n_unscored == 1 and got.agreement.value == 1.0


def _scripted_pair_judge(prefer: str) -> Any:
    """The real pairwise prompt on a scripted backend: prefers the answer containing `prefer`."""
    from judges.judge import Judge
    from judges.pairs import LLMPairJudge
    from judges.prompt import fenced_blocks, load_prompt

    def reply(req: GenerationRequest) -> str:
        assert req.messages is not None
        b = fenced_blocks(req.messages[-1].content)
        a_has, b_has = prefer in b["RESPONSE A"], prefer in b["RESPONSE B"]
        return '{"verdict": "%s"}' % ("A" if a_has and not b_has else "B" if b_has and not a_has else "tie")

    backend = cast(ModelBackend, ScriptedBackend(reply))
    return LLMPairJudge(Judge(backend, load_prompt("pairwise"), model_label="scripted-judge"))


def test_calibration_against_the_campaign_labels(db: AnnotationStore, runs: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    from judges.calibration import write_calibration
    from judges.human.calibrate import agreement_results, calibrate_pairwise, human_pairwise_items

    c = _campaign(db, runs, "pw", "pairwise")
    # humans prefer the answer with "Rest" (run B's first) etc.: sides per item in item order
    _label_pairwise(db, c, {"a1": ["y", "x", "y", "y"], "a2": ["y", "x", "x"]})
    ds, items = human_pairwise_items(db, "pw")
    assert ds.reader == "human" and len(items) == 4
    assert [i.annotations for i in items] == [(2, 2), (1, 1), (2, 1), (2, None)]
    assert [i.human for i in items] == [2, 1, 0, 2]
    report = calibrate_pairwise(db, "pw", _scripted_pair_judge("Rest"), seed=0)
    judge_row, *baselines = report.rows
    assert judge_row.judge == "scripted-judge" and [b.judge for b in baselines] == [
        "always first", "longer wins", "random (seed 0)"]
    # the judge picks "Rest" on item 1 (agrees), ties elsewhere (items 2, 4 disagree, 3 agrees)
    assert judge_row.agreement.value == pytest.approx(2 / 4) and judge_row.n == 4
    assert report.human_alpha is not None and report.to_json()["humans"]["annotators"] == 2
    folder = write_calibration(report, tmp_path / "cal")
    assert "humans (2 annotators)" in (folder / "calibration.md").read_text()
    [res] = agreement_results("pw", report)
    assert res.kind == "judge_human_agreement" and res.value == pytest.approx(0.5)
    assert res.details["judge_fingerprint"] == report.judge_info["fingerprint"]
    with pytest.raises(HarnessError, match="no labels by lay annotators"):
        human_pairwise_items(db, "pw", role="lay")


def test_pointwise_calibration(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    from judges.human.calibrate import calibrate_pointwise
    from judges.judge import Judge
    from judges.prompt import fenced_blocks, load_prompt

    c = _campaign(db, runs, "p", "pointwise", dimensions=["fluent"])
    who = db.invite("d", "expert")[0]
    for a in db.queue(c, who):
        text = db.item(a.item_id).payload["answers"][0]["text"]
        db.submit(c, who, a, {"fluent": max(1, min(5, len(text.split())))}, None)

    def reply(req: GenerationRequest) -> str:  # scores = words of the reply: perfect rank agreement
        assert req.messages is not None
        answer = fenced_blocks(req.messages[-1].content)["DOCTOR REPLY"]
        n = max(1, min(5, len(answer.split())))
        return json.dumps({d: n for d in DIMENSIONS})

    judge = Judge(cast(ModelBackend, ScriptedBackend(reply)), load_prompt("pointwise"), model_label="s")
    result = calibrate_pointwise(db, "p", judge)
    [row] = result.rows
    assert row["dimension"] == "fluent" and row["n"] == 9 and row["spearman"] == pytest.approx(1.0)
    assert row["mean_abs_diff"] == 0.0 and row["alpha"] == pytest.approx(1.0)
    assert "Spearman" in result.markdown()


# -- serving and the CLI ----------------------------------------------------------------


def test_serve_refuses_other_hosts_without_allow_remote(tmp_path: Path) -> None:
    from judges.human.server import is_loopback, serve

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    with pytest.raises(HarnessError, match=r"--allow-remote.*TLS"):
        serve(tmp_path / "s.sqlite", host="0.0.0.0")
    # bound to loopback, a foreign Host header (DNS rebinding) is refused
    from judges.human.server import allowed_hosts

    client = TestClient(create_app(tmp_path / "s.sqlite", allowed_hosts=allowed_hosts(False)),
                        base_url="http://evil.example")
    assert client.get("/").status_code == 400


def _cli(argv: list[str]) -> int:
    from harness.cli import annotate

    parser = argparse.ArgumentParser(prog="harness")
    annotate.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_cli_create_invite_report_export(runs: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "cli.sqlite")
    assert _cli(["annotate", "create", "pw", "--runs", str(runs[0]), str(runs[1]), "--protocol", "pairwise",
                 "--dimensions", "overall,safe", "--per-item", "2", "--store", store]) == 0
    assert "campaign pw: pairwise, 4 items, 0 gold" in capsys.readouterr().out
    assert _cli(["annotate", "invite", "Dr. A", "--role", "expert", "--store", store,
                 "--base-url", "http://127.0.0.1:9999"]) == 0
    link = capsys.readouterr().out.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:9999/signin/[A-Za-z0-9_-]{40,}", link)
    with AnnotationStore(store) as db:
        c = db.campaign("pw")
        who, _ = db.redeem(link.rsplit("/", 1)[1]) or (None, None)
        assert who is not None
        for a in db.queue(c, who):
            db.submit(c, who, a, {"overall": "x", "safe": "y"}, "because")
    assert _cli(["annotate", "report", "pw", "--store", store, "--publish"]) == 0
    out = capsys.readouterr()
    assert "Human win / tie / loss" in out.out and "new result(s)" in out.err
    out_file = tmp_path / "mt.jsonl"
    assert _cli(["annotate", "export", "pw", "--format", "mt-bench", "--output", str(out_file), "--store", store]) == 0
    assert len(out_file.read_text().splitlines()) == 4
    with pytest.raises(HarnessError, match="holds pairwise judgements"):
        _cli(["annotate", "create", "p", "--runs", str(runs[0]), "--protocol", "pointwise", "--store", store])
        _cli(["annotate", "export", "p", "--format", "llmbar", "--store", store])


def test_calibrate_command_writes_tables_and_publishes(db: AnnotationStore, runs: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    from judges.human.calibrate import calibrate_command

    c = _campaign(db, runs, "pw", "pairwise")
    _label_pairwise(db, c, {"a1": ["y", "x", "y", "y"]})
    store = str(tmp_path / "store.sqlite")
    text = calibrate_command(store, "pw", None, output=tmp_path / "cal", publish=True)
    assert "Calibration on human-pw" in text and "longer wins" in text
    data = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert data["dataset"] == "human-pw" and data["n_items"] == 4 and data["judge"] is None
    assert "store: 0 new result(s)" in text  # baselines are not stored as judge calibrations
    _campaign(db, runs, "p", "pointwise")
    with pytest.raises(HarnessError, match="no baselines: name a judge"):
        calibrate_command(store, "p", None)


def test_time_spent_comes_from_the_signed_serving_time(db: AnnotationStore, runs: tuple[Path, Path]) -> None:
    c = _campaign(db, runs, "pw", "pairwise")
    client = _signed_in(db, "e", "expert")
    page = client.get("/c/pw", follow_redirects=True).text
    fields = hidden_fields(page)
    assert re.fullmatch(r"\d+:\d+\.\d{3}\.[A-Za-z0-9_-]+", fields["shown"])  # assignment:time.signature
    # a forged serving time (bad signature) is ignored: no time recorded rather than a wrong one
    forged = fields["shown"].replace(fields["shown"].split(":")[1][:4], "1000", 1)
    client.post("/c/pw/i/1", data={"csrf": fields["csrf"], "shown": forged, "cmp:overall": "A", "comment": "r"})
    [label] = db.labels(c)
    assert label.seconds is None
    _submit(client, "/c/pw/i/1", {"cmp:overall": "B", "comment": "r2"})
    [label] = db.labels(c)
    assert label.revision == 2 and label.seconds is not None and 0 <= label.seconds < 60
