"""The dashboard at ``/dashboard``: its routes, and end to end in Debian's headless Chromium.

The browser test builds a small world on a SQLite file (group g1 = {u0, u1}, concepts of the
tiny trained DKT), posts answers for g1's learners through the API, serves it with a real
uvicorn process and drives ``/usr/bin/chromium`` through the system ``/usr/bin/chromedriver``
(Selenium; no downloaded browser): a wrong key shows the 401 detail; the teacher key logs in;
group g1 is picked and the class overview (the default tab) shows one row per student with
the counts of ``GET /v1/analytics/groups/g1/students`` and the what-to-reteach list in the
API's order (most struggling first); the class overview's and the heatmap's CSV buttons
download files that parse; the heatmap has concepts x students cells, practised ones solid
with the number of own answers, estimated ones faded (counted as SVG marks against the API's
JSON); a click on a cell opens that student's timeline (dates on the x axis); every other view
renders without an error; nothing is fetched from another origin and the console has no
errors. Screenshots go to the test's tmp directory and, where ``DASHBOARD_SCREENSHOTS`` names
a directory, there too.

Without Chromium and its driver, Selenium or the vendored charting library the browser tests
skip with the reason (``scripts/test.sh`` installs the browser where apt is available and
``scripts/setup.sh`` vendors the library).

Screenshots of the demo for the docs (``tutor demo --no-serve --workdir demo`` first)::

    DASHBOARD_DEMO=demo DASHBOARD_SCREENSHOTS=docs/dashboard \\
        .venv/bin/python -m pytest tests/tutor/test_dashboard_browser.py -k demo
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.tutor.conftest import build_world, reset_schema
from tests.tutor.helpers import ans, run_server
from tutor.api.analytics import STUDENT_COLUMNS
from tutor.dashboard import VENDOR_FILES, static_root, vendor_missing

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_PATH", "/usr/bin/chromedriver")
WAIT_S = 60
# the heatmap's cells: one SVG path per (learner, concept) in the named rect mark's group
CELLS = "#heatmap svg g.mark-rect.role-mark.cells_marks path"
# the practised cells' answer counts, the struggling cells' outlines, the class average
ANSWER_TEXTS = "#heatmap svg g.mark-text.role-mark.answers_marks text"
OUTLINES = "#heatmap svg g.mark-rect.role-mark.outline_marks path"
AVERAGE_CELLS = "#heatmap svg g.mark-rect.role-mark.avgcells_marks path"
TIMELINE_LINES = "#timeline svg g.mark-line.role-mark path"
TIMELINE_DOTS = "#timeline svg g.mark-symbol.role-mark path"


# ---------------------------------------------------------------------- routes (no browser)
@pytest.fixture
def app_client(tmp_path: Path):
    from fastapi.testclient import TestClient

    from tutor.api import create_app
    from tutor.settings import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", environment="test")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.skipif(bool(vendor_missing()), reason="run scripts/vendor_dashboard.sh first")
def test_dashboard_page_and_assets(app_client):
    r = app_client.get("/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    srcs = [s for s in re.findall(r'(?:src|href)="([^"]+)"', r.text) if s != "data:,"]
    assert srcs and all(s.startswith("/dashboard/static/") for s in srcs), srcs
    for src in srcs:
        asset = app_client.get(src)
        assert asset.status_code == 200, src
        assert asset.headers["content-type"].split(";")[0] in ("text/javascript", "text/css")
    assert app_client.get("/dashboard/").status_code == 200
    # the page itself needs no key; the data calls do
    assert app_client.get("/v1/groups").status_code == 401


def test_dashboard_references_no_external_url():
    root = static_root()
    for name in ("index.html", "app.js", "app.css"):
        text = (root / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name


def test_dashboard_static_paths_are_confined(app_client):
    for bad in ("../__init__.py", "..%2F__init__.py", "vendor/../../__init__.py", "nope.js"):
        assert app_client.get(f"/dashboard/static/{bad}").status_code == 404, bad


def test_dashboard_without_vendored_library_is_503(app_client, monkeypatch):
    import tutor.dashboard as dashboard

    monkeypatch.setattr(dashboard, "vendor_missing", lambda: list(VENDOR_FILES))
    r = app_client.get("/dashboard")
    assert r.status_code == 503
    assert "scripts/vendor_dashboard.sh" in r.json()["detail"]


# ---------------------------------------------------------------------- the browser
def _skip_without_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(
            f"no headless browser: {', '.join(missing)} missing (apt-get install chromium "
            "chromium-driver; scripts/test.sh does it where apt-get is available)"
        )
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[dev]')")
    if vendor_missing():
        pytest.skip(
            f"dashboard charting library not vendored ({', '.join(vendor_missing())}): "
            "run scripts/vendor_dashboard.sh"
        )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    """Headless Chromium; its downloads (CSV exports) land in ``driver.download_dir``."""
    _skip_without_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1000",
        "--force-device-scale-factor=1",
        "--lang=en-GB",
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            "safebrowsing.enabled": True,
        },
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    # headless Chromium saves downloads only where told so through the DevTools protocol
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.download_dir = downloads
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    """Screenshots into the test's tmp directory (and ``DASHBOARD_SCREENSHOTS`` when set)."""

    def __init__(self, driver, tmp: Path) -> None:
        self.driver = driver
        self.dirs = [tmp / "screenshots"]
        if os.environ.get("DASHBOARD_SCREENSHOTS"):
            self.dirs.append(Path(os.environ["DASHBOARD_SCREENSHOTS"]))
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)

    def take(self, name: str, element_id: str | None = None, *, max_height: int = 1400) -> Path:
        from selenium.webdriver.common.by import By

        first = self.dirs[0] / f"{name}.png"
        if element_id:
            self.driver.find_element(By.ID, element_id).screenshot(str(first))
        else:
            # the window as tall as the page's content (600 to max_height px), then back
            size = self.driver.get_window_size()
            self.driver.execute_script("window.scrollTo(0, 0)")
            chrome, page = self.driver.execute_script(
                "return [window.outerHeight - window.innerHeight, Math.ceil("
                "document.querySelector('main').getBoundingClientRect().bottom + scrollY)]"
            )
            self.driver.set_window_size(size["width"], min(max_height, max(600, page)) + chrome)
            self.driver.save_screenshot(str(first))
            self.driver.set_window_size(size["width"], size["height"])
        for d in self.dirs[1:]:
            shutil.copyfile(first, d / first.name)
        return first


def _wait(driver, predicate, what: str, timeout: float = WAIT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: predicate(d))
    except TimeoutException:
        states = driver.execute_script(
            "return [...document.querySelectorAll('.state')].filter(e => !e.hidden)"
            ".map(e => e.id + ': ' + e.textContent)"
        )
        raise AssertionError(f"timed out waiting for {what}; visible states: {states}") from None


def _css(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _visible(driver, element_id: str) -> bool:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).is_displayed()


def _state(driver, element_id: str) -> str:
    """The state box's kind: '' (hidden: content shown), 'loading', 'empty' or 'error'."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).get_attribute("data-state") or ""


def _settled(driver, element_id: str) -> bool:
    return _state(driver, element_id) != "loading"


def _login(driver, base: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/dashboard")
    _wait(driver, lambda d: _visible(d, "login"), "the login form")
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "login-submit").click()


def _pick_group(driver, group: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _wait(driver, lambda d: _visible(d, "app"), "the dashboard after login")
    select = Select(driver.find_element(By.ID, "group-select"))
    assert group in [o.get_attribute("value") for o in select.options]
    select.select_by_value(group)


def _cell(driver, learner: str, concept: str):
    """The heatmap cell of a learner and a concept (by ids, in the mark's ARIA label)."""
    found = [
        c
        for c in _css(driver, CELLS)
        if (c.get_attribute("aria-label") or "").startswith(
            f"learner {learner}; concept {concept};"
        )
    ]
    assert len(found) == 1, f"{len(found)} cells for ({learner}, {concept})"
    return found[0]


def _click(driver, element) -> None:
    """A real pointer click in the middle of an element (what is on top of it gets it: the
    answer count written on a heatmap cell opens the same timeline)."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    ActionChains(driver).move_to_element(element).click().perform()


def _tab(driver, tab: str) -> None:
    _css(driver, f'.tabs [data-tab="{tab}"]')[0].click()


def _origin_report(driver, base: str) -> tuple[list[str], list[str]]:
    """Resources fetched from another origin, and console errors (bar the expected 401)."""
    urls = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])"
    )
    foreign = [u for u in urls if not u.startswith(base)]
    errors = [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "status of 401" not in e["message"]
    ]
    return foreign, errors


def _download(driver, which: str, timeout: float = WAIT_S) -> Path:
    """Click a view's "Download CSV" button; the file it saves (waited for)."""
    before = set(driver.download_dir.iterdir())
    button = _css(driver, f'button.csv[data-csv="{which}"]')[0]
    assert button.is_displayed() and button.is_enabled(), which
    button.click()

    def done(_d) -> Path | None:
        new = [p for p in driver.download_dir.iterdir() if p not in before]
        ready = [p for p in new if p.suffix == ".csv" and p.stat().st_size > 0]
        return ready[0] if ready else None

    path = _wait(driver, done, f"the {which} CSV download", timeout=timeout)
    assert button.get_attribute("data-downloaded") == path.name
    return path


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _int_cells(row) -> list[int]:
    """The class overview row's numbers: mastered, learning, struggling, not started, answers."""
    return [int(td.text.replace(",", "")) for td in row.find_elements("css selector", "td.num")]


def test_dashboard_in_headless_chromium(browser, tmp_path, dkt_run):
    from selenium.webdriver.common.by import By

    from tutor.catalogue import clear_cache
    from tutor.service import MODELS

    MODELS.clear()
    clear_cache()
    url = f"sqlite:///{tmp_path / 'tutor.db'}"
    reset_schema(url)
    world = build_world(url, dkt_run)
    shots = Shots(browser, tmp_path)
    with run_server(world.url, tmp_path / "server.log") as (base, _):
        with httpx.Client(base_url=base, timeout=30) as http:
            # answers for g1's learners: u0 mostly right on c0's items, u1 mixed, then three
            # wrong in a row on i0 (struggling with its concepts)
            batch = [ans(f"d0-{k}", "u0", f"i{k % 5}", int(k % 4 != 0), k) for k in range(12)]
            batch += [ans(f"d1-{k}", "u1", f"i{k % 10}", k % 2, k) for k in range(10)]
            batch += [ans(f"d2-{k}", "u1", "i0", 0, 20 + k) for k in range(3)]
            # and on the other concepts' first items: more reasons than the at-risk list
            # shows before its "more reasons" fold
            for item in ("i5", "i10", "i15"):
                batch += [ans(f"d3-{item}-{k}", "u1", item, 0, 30 + k) for k in range(3)]
            r = http.post("/v1/answers", json={"answers": batch}, headers=world.headers("ingest"))
            assert r.status_code == 201, r.text
            n_concepts = http.get("/v1/concepts", headers=world.headers("admin")).json()["total"]
            n_learners = http.get("/v1/groups/g1", headers=world.headers("admin")).json()
            n_learners = len(n_learners["members"])
            # what the page must show, as the teacher's key reads it
            teacher = world.headers("teacher")
            api = "/v1/analytics/groups/g1"
            students = http.get(f"{api}/students", headers=teacher).json()
            reteach = http.get(f"{api}/reteach", headers=teacher).json()
            grid = http.get(f"{api}/mastery", headers=teacher).json()
            risk = http.get(f"{api}/at-risk", headers=teacher).json()
        assert (n_learners, n_concepts) == (2, 4)
        assert students["total"] == n_learners and students["timed"] is True
        assert [s["struggling"] > 0 for s in students["students"]] == [False, True], students
        driver = browser

        # a wrong key: the API's 401 detail is shown, the form stays
        _login(driver, base, "not-a-key")
        _wait(
            driver,
            lambda d: "invalid or revoked API key" in d.find_element(By.ID, "login-error").text,
            "the 401 detail under the login form",
        )
        assert _visible(driver, "login") and not _visible(driver, "app")
        shots.take("login-error")

        # the teacher's key, group g1: the class overview comes first
        _login(driver, base, world.keys["teacher"])
        _pick_group(driver, "g1")
        assert driver.execute_script("return sessionStorage.length") >= 1
        assert _css(driver, '.tabs [data-tab="class"]')[0].get_attribute("aria-selected") == "true"
        _wait(driver, lambda d: _settled(d, "class-state"), "the class overview")
        assert _state(driver, "class-state") == "", driver.find_element(By.ID, "class-state")
        _check_class_overview(driver, students)
        _wait(driver, lambda d: _settled(d, "reteach-state"), "the what-to-reteach list")
        _check_reteach(driver, reteach)
        shots.take("class")

        # its CSV: the whole class, one row per student, the API's columns
        header, rows = _read_csv(_download(driver, "class"))
        assert header == STUDENT_COLUMNS, header
        assert sorted(r["learner_id"] for r in rows) == sorted(
            s["learner_id"] for s in students["students"]
        )
        by_id = {s["learner_id"]: s for s in students["students"]}
        for r in rows:
            for k in ("mastered", "learning", "struggling", "not_started", "answers"):
                assert int(r[k]) == by_id[r["learner_id"]][k], (r, k)

        # the heatmap: concepts (rows) x students (columns); practised cells solid with the
        # number of own answers, estimated ones faded
        _tab(driver, "mastery")
        _wait(driver, lambda d: _settled(d, "mastery-state"), "the mastery heatmap")
        assert _state(driver, "mastery-state") == "", driver.find_element(By.ID, "mastery-state")
        _wait(driver, lambda d: len(_css(d, CELLS)) > 0, "heatmap cells")
        _check_heatmap(driver, grid, only_practised=True)
        assert "faded = estimated by the model" in driver.find_element(By.ID, "mastery-key").text
        legend = " ".join(t.text for t in _css(driver, "#heatmap svg g.role-legend text"))
        threshold = grid["rule"]["mastery_threshold"]
        assert f"threshold {threshold:.2f}" in legend, legend
        shots.take("heatmap")
        # every concept, the unpractised ones too (all estimated)
        driver.find_element(By.ID, "mastery-practised").click()
        _wait(
            driver,
            lambda d: len(_css(d, CELLS)) == n_learners * n_concepts,
            "the heatmap with every concept",
        )
        _check_heatmap(driver, grid, only_practised=False)
        header, rows = _read_csv(_download(driver, "mastery"))
        assert header == [
            "learner_id",
            "name",
            "concept_id",
            "concept",
            "status",
            "mastery",
            "own_answers",
        ]
        assert len(rows) == n_learners * n_concepts

        # a click on a cell (u0, c0) opens u0's timeline with c0 highlighted: one dot per
        # answer of u0 on c0's items (i0..i4: all 12 of them), dates on the x axis
        _click(driver, _cell(driver, "u0", "c0"))
        _wait(driver, lambda d: _visible(d, "panel-learner"), "the learner panel")
        _wait(driver, lambda d: _settled(d, "learner-state"), "the timeline")
        assert _state(driver, "learner-state") == "", driver.find_element(By.ID, "learner-state")
        _wait(driver, lambda d: len(_css(d, TIMELINE_LINES)) > 0, "the timeline's lines")
        assert driver.find_element(By.ID, "learner-title").text.endswith("u0")
        assert driver.find_element(By.ID, "learner-concept").get_attribute("value") == "c0"
        timeline = driver.find_element(By.ID, "timeline")
        assert timeline.get_attribute("data-points") == "12"
        assert timeline.get_attribute("data-timed") == "true"
        assert not _visible(driver, "learner-note")  # the "no real times" note
        assert len(_css(driver, TIMELINE_DOTS)) == 12
        width = driver.execute_script(
            "return document.querySelector('#timeline svg').getBoundingClientRect().width"
        )
        assert width > 300, f"the timeline is {width} px wide"
        shots.take("timeline")

        # every other view renders without an error state, each with its CSV button
        _other_views(driver, shots)
        _check_risk(driver, risk)
        for which in ("class", "reteach", "mastery", "learner", "groups", "risk", "curves"):
            assert _css(driver, f'button.csv[data-csv="{which}"]'), which
        assert _css(driver, '#groups-cards [data-group="1"]'), "no suggested group card"
        _tab(driver, "items")
        if _visible(driver, "items-table"):
            header = _css(driver, '#items-table th[data-sort="attempts"]')[0]
            assert header.get_attribute("aria-sort") == "descending"
            # two learners: no item has enough data to judge, so none is highlighted
            assert _css(driver, '#items-table tbody tr[data-enough="false"].thin')
            assert not _css(driver, "#items-table tbody td.gap.warn")
            header.click()
            _wait(
                driver,
                lambda d: (
                    _css(d, '#items-table th[data-sort="attempts"]')[0].get_attribute("aria-sort")
                    == "ascending"
                    and _settled(d, "items-state")
                ),
                "items sorted ascending",
            )
            assert _state(driver, "items-state") != "error"

        foreign, errors = _origin_report(driver, base)
        assert not foreign, f"fetched from another origin: {foreign}"
        assert not errors, f"console errors: {errors}"

        # log out: the key leaves session storage
        driver.find_element(By.ID, "logout").click()
        _wait(driver, lambda d: _visible(d, "login"), "the login form after logging out")
        assert (
            driver.execute_script("return sessionStorage.getItem('kt-tutor.dashboard.key')") is None
        )


def _check_class_overview(driver, students: dict) -> None:
    """One row per student, in the API's order, with the API's counts and answers."""
    rows = _css(driver, "#class-table tbody tr")
    api_rows = students["students"]
    assert [r.get_attribute("data-learner") for r in rows] == [s["learner_id"] for s in api_rows]
    for row, s in zip(rows, api_rows, strict=True):
        want = [s[k] for k in ("mastered", "learning", "struggling", "not_started", "answers")]
        assert _int_cells(row) == want, (s["learner_id"], _int_cells(row), want)
        name = row.find_element("css selector", "th").text
        assert name == s["label"], (name, s["label"])
        assert s["learner_id"] in row.find_element("css selector", "th button").get_attribute(
            "title"
        )
    assert "mastered: at least" in _css(driver, "#class-rule")[0].text


def _check_reteach(driver, reteach: dict) -> None:
    """The concepts in the API's order, the most struggling first."""
    if not reteach["concepts"]:
        assert _state(driver, "reteach-state") == "empty"
        return
    assert _state(driver, "reteach-state") == ""
    rows = _css(driver, "#reteach-table tbody tr")
    shown = [r.get_attribute("data-concept") for r in rows]
    assert shown and shown == [c["concept_id"] for c in reteach["concepts"]][: len(shown)]
    struggling = [int(r.get_attribute("data-struggling")) for r in rows]
    assert struggling == sorted(struggling, reverse=True), struggling
    for row, c in zip(rows, reteach["concepts"], strict=False):
        cells = row.find_elements("css selector", "td.num")
        assert [int(td.text) for td in cells[:4]] == [
            c["struggling"],
            c["learning"],
            c["mastered"],
            c["not_started"],
        ]


def _check_heatmap(driver, grid: dict, *, only_practised: bool) -> None:
    """Cells, solid practised ones with their answer counts and faded estimated ones, as the
    API's grid says (concepts nobody practised left out when ``only_practised``)."""
    learners = grid["learners"]
    members = grid["group"]["learners"]
    cols = [
        j
        for j in range(len(grid["concepts"]))
        if not only_practised or grid["concept_counts"]["not_started"][j] < members
    ]
    own = [lr["answers"][j] for lr in learners for j in cols]
    practised = [n for n in own if n > 0]
    heatmap = driver.find_element("id", "heatmap")
    assert heatmap.get_attribute("data-cells") == str(len(own))
    assert heatmap.get_attribute("data-practised") == str(len(practised))
    cells = _css(driver, CELLS)
    assert len(cells) == len(own)
    opacity = [c.get_attribute("opacity") for c in cells]
    assert opacity.count("1") == len(practised), opacity
    assert opacity.count("0.25") == len(own) - len(practised), opacity
    counts = sorted(int(t.text) for t in _css(driver, ANSWER_TEXTS))
    assert counts == sorted(practised)
    struggling = sum(st == "struggling" for lr in learners for st in lr["status"])
    assert len(_css(driver, OUTLINES)) == struggling
    # the class average: one cell per concept shown
    assert len(_css(driver, AVERAGE_CELLS)) == len(cols)
    concepts = driver.execute_script(
        "return [...document.querySelectorAll('#heatmap svg g.role-axis-label text')]"
        ".map(t => t.textContent)"
    )
    for j in cols:
        assert grid["concepts"][j]["name"][:39] in " ".join(concepts), concepts


def _check_risk(driver, risk: dict) -> None:
    """The at-risk tab: each student's reasons in the API's order, the first
    RISK_REASONS_SHOWN listed, the rest folded under "N more reasons" until opened."""
    shown_at_most = 5
    _tab(driver, "risk")
    _wait(driver, lambda d: _settled(d, "risk-state"), "the at-risk list")
    reasons = {r["learner_id"]: [str(x) for x in r["reasons"]] for r in risk["learners"]}
    assert max(len(v) for v in reasons.values()) > shown_at_most, reasons  # a fold to see
    for learner, expected in reasons.items():
        row = _css(driver, f'#risk-table tbody tr[data-learner="{learner}"]')[0]
        lists = row.find_elements("css selector", "ol.reasons")
        first = [li.text for li in lists[0].find_elements("css selector", "li")]
        assert first == expected[:shown_at_most], (learner, first)
        folds = row.find_elements("css selector", "details.reasons-more")
        if len(expected) <= shown_at_most:
            assert not folds
            continue
        summary = folds[0].find_element("css selector", "summary")
        more = len(expected) - shown_at_most
        assert summary.text == f"{more} more reason{'s' if more > 1 else ''}"
        assert not lists[1].is_displayed()
        _click(driver, summary)
        rest = [li.text for li in lists[1].find_elements("css selector", "li")]
        assert rest == expected[shown_at_most:], (learner, rest)


def _other_views(
    driver,
    shots: Shots,
    *,
    timeout: float = WAIT_S,
    names: dict[str, str] | None = None,
) -> None:
    """Open the groups, at-risk, curves, items and model-card tabs: each settles without an
    error state; a screenshot of each (named by ``names``, else by the tab)."""
    from selenium.webdriver.common.by import By

    boxes = {"groups": "groups-view-state"}
    for tab in ("groups", "risk", "curves", "items", "model"):
        box = boxes.get(tab, f"{tab}-state")
        _tab(driver, tab)
        _wait(driver, lambda d, b=box: _settled(d, b), f"the {tab} view", timeout=timeout)
        assert _state(driver, box) != "error", f"{tab}: {driver.find_element(By.ID, box).text}"
        shots.take((names or {}).get(tab, tab))


# ---------------------------------------------------------------------- the demo, for the docs
@pytest.mark.skipif(
    not os.environ.get("DASHBOARD_DEMO"),
    reason="screenshots of the demo: set DASHBOARD_DEMO to a `tutor demo --no-serve` workdir",
)
def test_dashboard_demo_screenshots(browser, tmp_path):
    from tutor.db.migrate import upgrade

    workdir = Path(os.environ["DASHBOARD_DEMO"]).resolve()
    demo = json.loads((workdir / "keys.json").read_text())
    upgrade(demo["database_url"])  # a demo made before the latest migration
    browser.set_window_size(1700, 1250)
    shots = Shots(browser, tmp_path)
    with run_server(demo["database_url"], tmp_path / "server.log") as (base, _):
        auth = {"Authorization": f"Bearer {demo['keys']['teacher']}"}
        with httpx.Client(base_url=base, timeout=120, headers=auth) as http:
            grid = http.get("/v1/analytics/groups/demo-class/mastery").json()
            learner = max(grid["learners"], key=lambda r: r["n_answers"])["learner_id"]
            top = http.get(f"/v1/analytics/learners/{learner}/timeline").json()["concepts"][0]
        driver = browser
        _login(driver, base, demo["keys"]["teacher"])
        _pick_group(driver, "demo-class")
        _wait(driver, lambda d: _settled(d, "class-state"), "the class overview", timeout=180)
        _wait(driver, lambda d: _settled(d, "reteach-state"), "what to reteach", timeout=180)
        shots.take("class", max_height=2400)
        _tab(driver, "mastery")
        _wait(driver, lambda d: len(_css(d, CELLS)) > 0, "heatmap cells", timeout=180)
        shots.take("heatmap", max_height=2400)
        _click(driver, _cell(driver, learner, top["concept_id"]))
        _wait(driver, lambda d: len(_css(d, TIMELINE_DOTS)) > 0, "the timeline", timeout=120)
        shots.take("timeline")
        _other_views(driver, shots, timeout=180, names={"risk": "at-risk", "model": "model-card"})
        foreign, errors = _origin_report(driver, base)
        assert not foreign and not errors, (foreign, errors)
