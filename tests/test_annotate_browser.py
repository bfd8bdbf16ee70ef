"""The annotation app end to end in real headless Chromium (Debian's /usr/bin/chromium driven by
Playwright), over two real runs of the default model (float32 and bfloat16, 2 samples each)
and a real uvicorn server in its own process.

An admin signs in through a one-time link and creates a pairwise and a pointwise campaign and
three invites with clicks; two experts complete both campaigns with clicks (htmx swaps each
next item in); the server is killed (SIGKILL) mid-campaign and restarted: no submitted label is
lost and the annotator resumes where they left off; the report shows win rates and agreement.
Negative checks: a <script> answer does not run, a form without its CSRF token is refused, one
annotator cannot see another's labels or the admin pages, the pairwise page source names no
model, a lay annotator is never shown *Safe*. Screenshots of every protocol's page land in
HARNESS_SCREENSHOTS (e.g. docs/screenshots) when that is set."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from annotate_support import PLANTED_SCRIPT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (fastapi, uvicorn) is not installed")

pytestmark = pytest.mark.slow


def _harness_run(out: Path, *extra: str) -> Path:
    cmd = [sys.executable, "-m", "harness", "run", "--tasks", "mts_dialog_turn", "--limit", "2",
           "--data-source", "bundled", "--output", str(out), "--quiet", *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real runs of the default model: float32 and bfloat16."""
    tmp = tmp_path_factory.mktemp("runs")
    return _harness_run(tmp / "fp32"), _harness_run(tmp / "bf16", "--model-args", "dtype=bfloat16")


def _planted_copy(run: Path, out: Path) -> Path:
    """The float32 run with its first answer replaced by planted markup, as another model."""
    shutil.copytree(run, out)
    record = json.loads((out / "run.json").read_text())
    record["run_id"] = "planted-run"
    record["model"]["name"] = 'evil <b onmouseover="x()">model</b>'
    record["model"]["fingerprint"] = "planted-weights"
    (out / "run.json").write_text(json.dumps(record))
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines() if x.strip()]
    lines[0]["score"]["metadata"]["output"] = PLANTED_SCRIPT + ' <img src=x onerror="window.__pwned=2">'
    (out / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`serve()` in a child process, so it can be killed the hard way and started again."""

    def __init__(self, store: Path, port: int):
        self.store, self.port = store, port
        self.proc: subprocess.Popen[str] | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        code = (f"from judges.human.server import serve; "
                f"serve({str(self.store)!r}, port={self.port}, log_level='info')")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                assert self.proc.poll() is None, self.proc.communicate()[0]
                time.sleep(0.2)
        raise AssertionError("the annotation server did not start")

    def kill(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        out, _ = self.proc.communicate(timeout=30)
        return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, real_runs: tuple[Path, Path]) -> Iterator[Server]:
    from leaderboard.store import Store

    tmp = tmp_path_factory.mktemp("app")
    store = tmp / "store.sqlite"
    with Store(store) as s:
        for run in real_runs:
            s.import_run(run)
    srv = Server(store, _free_port())
    srv.start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _person(browser: Any) -> Any:
    """A browser context of its own (own cookies) with one page that records console errors."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.messages = []
    page.on("console", lambda m: page.messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.messages.append(f"pageerror: {e}"))
    return page


def _shot(page: Any, name: str, tmp: Path) -> None:
    """A small PNG (palette) for a person to look at; copied to $HARNESS_SCREENSHOTS if set."""
    path = tmp / f"annotate-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    try:
        from PIL import Image

        with Image.open(path) as img:
            img.convert("RGB").quantize(colors=64).save(path, optimize=True)
    except ImportError:  # pragma: no cover - Pillow comes with the test tools
        pass
    assert path.stat().st_size > 5_000
    target = os.environ.get("HARNESS_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def _sign_in(page: Any, link: str) -> None:
    page.goto(link)
    page.click("#signin")
    page.wait_for_load_state("load")


def _answer_texts(page: Any) -> dict[str, str]:
    return dict(page.eval_on_selector_all(
        "#answers article", "els => els.map(e => [e.dataset.label, e.querySelector('.text').textContent])"))


def _submit_and_wait(page: Any) -> None:
    """Click Submit; htmx swaps in the next item (or redirects to my labels at the end)."""
    before = page.get_attribute("#item", "data-position")
    url = page.url
    page.click("#submit")
    page.wait_for_function(
        "([pos, url]) => location.href !== url || (document.querySelector('#item') && "
        "document.querySelector('#item').dataset.position !== pos)",
        arg=[before, url])
    page.wait_for_load_state("load")


def _do_pairwise(page: Any, tie_on_equal: str = "tie") -> None:
    texts = _answer_texts(page)
    a, b = len(texts["A"]), len(texts["B"])
    choice = "A" if a > b else "B" if b > a else tie_on_equal
    page.check(f'input[name="cmp:overall"][value="{choice}"]')
    page.fill('textarea[name="comment"]', f"chose {choice}: the longer answer covers more")
    _submit_and_wait(page)


def _do_pointwise(page: Any, shift: int = 0) -> None:
    length = len(next(iter(_answer_texts(page).values())))
    for key in page.eval_on_selector_all("fieldset.question", "els => els.map(e => e.dataset.key)"):
        score = max(1, min(5, (4 if length > 100 else 2) + (shift if key == "helpful" else 0)))
        page.check(f'input[name="dim:{key}"][value="{score}"]')
    _submit_and_wait(page)


def _labels(store: Path, campaign: str) -> list[Any]:
    from judges.human.annotations import AnnotationStore

    with AnnotationStore(store) as db:
        return db.labels(db.campaign(campaign))


def test_campaigns_through_the_browser(server: Server, browser: Any, real_runs: tuple[Path, Path],
                                       tmp_path: Path) -> None:
    from judges.human.annotations import AnnotationStore

    with AnnotationStore(server.store) as db:
        _, admin_token = db.invite("Ada (admin)", "admin")
    # -- the admin creates two campaigns and three invites, with clicks ------------------
    admin = _person(browser)
    _sign_in(admin, f"{server.url}/signin/{admin_token}")
    assert admin.url.endswith("/admin")
    for name, protocol in (("pw", "pairwise"), ("pt", "pointwise")):
        admin.fill('#create-form input[name="name"]', name)
        admin.select_option('#create-form select[name="protocol"]', protocol)
        for box in admin.query_selector_all('#create-form input[name="runs"]'):
            box.check()
        admin.click("#create")
        admin.wait_for_load_state("load")
        assert admin.is_visible(f'#campaign-list tr[data-campaign="{name}"]'), admin.content()[:2000]
    links = {}
    for person, role in (("alice", "expert"), ("bob", "expert"), ("carol", "lay")):
        admin.fill('#invite-form input[name="name"]', person)
        admin.select_option('#invite-form select[name="role"]', role)
        admin.click("#invite")
        admin.wait_for_load_state("load")
        links[person] = admin.input_value("#invite-link")
    _shot(admin, "admin", tmp_path)

    # -- alice: the pairwise campaign, then half the pointwise one ------------------------
    alice = _person(browser)
    _sign_in(alice, links["alice"])
    alice.click('tr[data-campaign="pw"] a.button')
    alice.wait_for_selector("#label-form")
    html = alice.content()
    for secret in ("8552d632", "float32", "bfloat16", *(json.loads((r / "run.json").read_text())["run_id"]
                                                       for r in real_runs)):
        assert secret not in html, secret
    assert not re.search(r"\bdefault\b", html)  # the runs' model name
    _shot(alice, "pairwise", tmp_path)
    _do_pairwise(alice)
    _do_pairwise(alice)
    assert alice.url.endswith("/c/pw/labels") and "2 of 2 items labelled" in alice.text_content("#summary")
    assert len(_labels(server.store, "pw")) == 2
    alice.goto(f"{server.url}/c/pt")
    _shot(alice, "pointwise", tmp_path)
    _do_pointwise(alice)
    _do_pointwise(alice)
    assert len(_labels(server.store, "pt")) == 2

    # -- the server dies mid-campaign and comes back: nothing submitted is lost -----------
    server.kill()
    server.start()
    assert len(_labels(server.store, "pt")) == 2 and len(_labels(server.store, "pw")) == 2
    alice.goto(f"{server.url}/c/pt")  # same cookie: still signed in, resumes at item 3
    assert alice.url.endswith("/c/pt/i/3"), alice.url
    _do_pointwise(alice)
    _do_pointwise(alice)
    assert alice.url.endswith("/c/pt/labels")

    # -- bob: both campaigns; he cannot see alice's labels or the admin pages -------------
    bob = _person(browser)
    _sign_in(bob, links["bob"])
    bob.goto(f"{server.url}/c/pw")
    _do_pairwise(bob, tie_on_equal="both_bad")
    # a form whose CSRF token is missing is refused, and nothing is stored
    bob.evaluate("document.querySelector('#label-form input[name=csrf]').remove()")
    bob.check('input[name="cmp:overall"][value="A"]')
    bob.fill('textarea[name="comment"]', "no token")
    bob.click("#submit")
    bob.wait_for_selector("#error-message")
    assert "CSRF" in bob.text_content("#error-message") and len(_labels(server.store, "pw")) == 3
    bob.goto(f"{server.url}/c/pw")
    _do_pairwise(bob, tie_on_equal="both_bad")
    bob.goto(f"{server.url}/c/pw/labels")
    assert "the longer answer" in bob.content() and "no token" not in bob.content()
    assert len([r for r in _labels(server.store, "pw") if r.annotator == "bob"]) == 2
    bob.goto(f"{server.url}/c/pt")
    for _ in range(4):
        _do_pointwise(bob, shift=-1)
    for path in ("/admin", "/admin/c/pw", "/admin/c/pw/export?format=labels"):
        response = bob.goto(server.url + path)
        assert response.status == 403 and "alice" not in bob.content()

    # -- carol (lay) is shown patient-friendly and fluent only, never Safe ----------------
    carol = _person(browser)
    _sign_in(carol, links["carol"])
    assert "pw" in carol.text_content("#campaigns") and "pt" in carol.text_content("#campaigns")
    carol.goto(f"{server.url}/c/pt")
    legends = carol.eval_on_selector_all("fieldset.question legend", "els => els.map(e => e.textContent)")
    assert legends == ["patient-friendly", "fluent"]
    assert "safe" not in carol.text_content("#label-form").lower()
    _shot(carol, "pointwise-lay", tmp_path)
    _do_pointwise(carol)

    # -- the report: win rates and agreement, as the library computes them ----------------
    from judges.human.report import campaign_report

    admin.goto(f"{server.url}/admin/c/pw")
    text = admin.text_content("main")
    assert "Human win / tie / loss" in text and "Krippendorff" in text and "Cohen's kappa" in text
    expected = campaign_report(server.store, "pw")
    for table in expected.tables:
        for row in table.rows:
            for cell in row:
                assert cell in text, cell
    [pair] = expected.data["pairwise"].values()
    assert pair["n"] == 4 and {pair["model_x"], pair["model_y"]} == {"default (dtype=float32)",
                                                                    "default (dtype=bfloat16)"}
    assert expected.data["agreement"]["kappa"]["expert:overall:alice|bob"]["n"] == 2
    _shot(admin, "report-pairwise", tmp_path)
    admin.goto(f"{server.url}/admin/c/pt")
    point = campaign_report(server.store, "pt")
    assert point.data["agreement"]["alpha"]["expert:helpful"]["units_pairable"] == 4
    assert "default (dtype=bfloat16)" in admin.text_content("main")

    # the labels feed the existing calibration study (baselines here; a judge in test_annotate)
    from judges.human.calibrate import calibrate_pairwise

    cal = calibrate_pairwise(server.store, "pw", None)
    assert [r.n for r in cal.rows] == [2, 2, 2] and cal.to_json()["humans"]["annotators"] == 2

    # -- planted markup stays text; case study and rubric pages --------------------------
    from judges.human.annotations import create_campaign
    from judges.human.campaigns import make_spec

    planted = _planted_copy(real_runs[0], tmp_path / "planted")
    rubric = tmp_path / "rubric.jsonl"
    sample_ids = [json.loads(x)["sample_id"] for x in (real_runs[0] / "samples.jsonl").read_text().splitlines()]
    rubric.write_text("".join(json.dumps({"sample_id": sid, "rubric": [
        {"criterion": "Responds to what the patient just said", "points": 5},
        {"criterion": "Asks a relevant follow-up question", "points": 3},
        {"criterion": "Repeats itself", "points": -2}]}) + "\n" for sid in sample_ids))
    with AnnotationStore(server.store) as db:
        create_campaign(db, make_spec("xss", [planted, real_runs[1]], "case-study"))
        create_campaign(db, make_spec("rub", [real_runs[0]], "rubric", rubric=rubric))
    alice.messages.clear()
    alice.goto(f"{server.url}/c/xss")
    alice.wait_for_selector("#label-form")
    item_position = alice.get_attribute("#item", "data-position")
    page_text = alice.text_content("#answers")
    if PLANTED_SCRIPT not in page_text:  # the planted answer is on the other item
        alice.goto(f"{server.url}/c/xss/i/{2 if item_position == '1' else 1}")
        page_text = alice.text_content("#answers")
    assert PLANTED_SCRIPT in page_text and alice.evaluate("window.__pwned") is None
    assert alice.eval_on_selector_all("#answers script, #answers img", "els => els.length") == 0
    assert "written by" not in alice.content() and "evil" not in alice.content()
    alice.fill('textarea[name="comment"]', "One answer is markup, not medicine.")
    _shot(alice, "case-study", tmp_path)
    alice.click("#submit")
    alice.wait_for_selector("[data-revealed]")
    revealed = alice.eval_on_selector_all("[data-revealed] b", "els => els.map(e => e.textContent)")
    assert sorted(revealed) == ["default", 'evil <b onmouseover="x()">model</b>']
    assert alice.evaluate("window.__pwned") is None
    _shot(alice, "case-study-revealed", tmp_path)
    alice.goto(f"{server.url}/c/rub")
    criteria = alice.eval_on_selector_all("fieldset.question legend", "els => els.map(e => e.textContent)")
    assert criteria == ["Responds to what the patient just said", "Asks a relevant follow-up question",
                        "Repeats itself"]
    for k, value in enumerate(("met", "not_met", "met")):
        alice.check(f'input[name="crit:{k}"][value="{value}"]')
    _shot(alice, "rubric", tmp_path)
    _submit_and_wait(alice)
    [rub] = _labels(server.store, "rub")
    assert rub.values == {"0": "met", "1": "not_met", "2": "met"}
    # nothing tried to run anywhere, so nothing was blocked by the CSP either
    for p in (admin, alice, bob, carol):
        assert [m for m in p.messages if "refused" in m.lower() or "pageerror" in m.lower()] == [], p.messages
    log = server.kill()
    for token in [admin_token, *(link.rsplit("/", 1)[1] for link in links.values())]:
        assert token not in log
