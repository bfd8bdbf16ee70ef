"""The built site in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright;
no browser is downloaded): it loads, sorts on a header click, filters, and a <script> or an
<img onerror> planted in a model answer does not run and shows as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_leaderboard import PLANTED_IMG, PLANTED_SCRIPT, _xss_store

from leaderboard.rankings import leaderboard_from_store
from leaderboard.site import build_site

CHROMIUM = Path("/usr/bin/chromium")
# Flags this sandboxed, offline machine needs (as root; without the background-networking ones
# Chromium keeps trying connections the closed network refuses).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    build_site(leaderboard_from_store(_xss_store(tmp)), tmp / "site")
    return tmp / "site"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    page.messages = []  # console messages and uncaught errors, for the assertions
    page.on("console", lambda m: page.messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.messages.append(f"pageerror: {e}"))
    yield page
    page.close()


def _column(page: Any, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr", f"rows => rows.map(r => r.cells[{index}].getAttribute('data-value'))")


def _header_index(page: Any, text: str) -> int:
    index: int = page.eval_on_selector_all(
        "#ranking thead th", "(ths, t) => ths.findIndex(th => th.firstChild.textContent.trim() === t)", text)
    assert index >= 0, text
    return index


def test_index_loads_sorts_and_filters(site: Path, page: Any) -> None:
    page.goto((site / "index.html").as_uri())
    assert page.title() == "Leaderboard: 4 models"
    names = page.eval_on_selector_all("#ranking tbody tr", "rows => rows.map(r => r.getAttribute('data-name'))")
    assert names[:2] == ['evil <b onmouseover="x()">model</b>', "alpha"]  # best average first
    medqa = _header_index(page, "medqa")
    page.click(f"#ranking thead th:nth-child({medqa + 1})")  # numbers: best first
    assert page.get_attribute(f"#ranking thead th:nth-child({medqa + 1})", "aria-sort") == "descending"
    values = [float(v) for v in _column(page, "ranking", medqa)]
    assert values == sorted(values, reverse=True) and values[0] == 1.0 and values[-1] == 0.25
    page.click(f"#ranking thead th:nth-child({medqa + 1})")
    values = [float(v) for v in _column(page, "ranking", medqa)]
    assert values == sorted(values) and values[0] == 0.25
    page.click("#ranking thead th:nth-child(2)")  # model names A to Z
    labels = page.eval_on_selector_all("#ranking tbody tr", "rows => rows.map(r => r.getAttribute('data-name'))")
    assert labels == sorted(labels) and labels[0] == "alpha"

    page.fill("#filter-models", "gam")
    visible = page.eval_on_selector_all("#ranking tbody tr", "rows => rows.filter(r => !r.hidden).length")
    assert visible == 1 and page.text_content("#shown") == "1 of 4 models"
    page.fill("#filter-models", "")
    page.fill("#filter-columns", "pubmedqa")
    shown = page.eval_on_selector_all("#ranking thead th", "ths => ths.filter(t => !t.hidden).map(t => "
                                      "t.firstChild.textContent.trim())")
    assert shown == ["#", "model", "pubmedqa"]
    assert [m for m in page.messages if "error" in m.lower() or "refused" in m.lower()] == []


def test_planted_markup_does_not_run_and_shows_as_text(site: Path, page: Any) -> None:
    evil = next((site / "models").glob("evil-*.html"))
    page.goto(evil.as_uri())
    page.wait_for_load_state("load")
    assert page.evaluate("window.__pwned") is None
    assert page.title() != "pwned" and page.title().startswith('evil <b onmouseover="x()">model</b>')
    answers = page.eval_on_selector_all(".examples .answer", "els => els.map(e => e.textContent)")
    assert PLANTED_SCRIPT in answers
    explanations = page.eval_on_selector_all(".examples .explanation", "els => els.map(e => e.textContent)")
    assert PLANTED_IMG in explanations
    assert page.eval_on_selector_all("main script, main img, h1 b", "els => els.length") == 0
    page.click(".examples details summary")  # the prompt holds the planted script too
    assert PLANTED_SCRIPT in page.text_content(".examples pre.prompt")
    assert page.evaluate("window.__pwned") is None
    # not merely blocked by the Content-Security-Policy: nothing tried to run
    assert [m for m in page.messages if "refused" in m.lower() or "error" in m.lower()] == []


def test_model_page_plots(site: Path, page: Any) -> None:
    alpha = next((site / "models").glob("alpha-*.html"))
    page.goto(alpha.as_uri())
    assert page.is_visible("#ci-chart") and page.is_visible("#radar")
    assert page.eval_on_selector_all("#ci-chart rect.range", "els => els.length") == 3
    labels = page.eval_on_selector_all("#radar text.label", "els => els.map(e => e.textContent)")
    assert labels == ["doctor-like", "patient-friendly", "professional", "safe", "fluent", "proactive", "helpful"]
    page.screenshot(path=str(site / "alpha.png"), full_page=True)  # for a person to look at
    assert (site / "alpha.png").stat().st_size > 10_000
