"""The report as a person sees it: the fixture runs' HTML report opened in headless Chromium.

Needs no control plane: only the run folders and the browser that ``make setup-browser``
(part of ``make test``) installs from Debian's packages. It loads with no console error, every
picture is decoded (``naturalWidth`` > 0), nothing is fetched from anywhere, and the figures
the page shows are the ones in each run's ``verdict.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from dnsrace.core import verdicts
from dnsrace.localplane import browser
from dnsrace.report import write_report

RUNS = Path(__file__).parent.parent / "unit" / "fixtures" / "runs"


@pytest.fixture(scope="module")
def chrome() -> Iterator[webdriver.Chrome]:
    found = browser.locate()
    if found is None:
        # `make test` installs them (setup-browser): missing means the setup failed, which
        # must not pass for a skipped test.
        pytest.fail("chromium and chromedriver are not installed: run `make setup-browser`")
    options = webdriver.ChromeOptions()
    options.binary_location = str(found.chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so Selenium Manager never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(found.driver)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def report(tmp_path: Path) -> tuple[Path, list[Path]]:
    runs = []
    for name in ("off", "on"):
        d = tmp_path / name
        shutil.copytree(RUNS / name, d)
        verdict = verdicts.judge(verdicts.RunRecord.load(d), str(d))
        (d / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=1))
        runs.append(d)
    return write_report(runs, tmp_path / "report.html"), runs


def test_report_loads_in_chromium_with_its_pictures_and_the_verdicts_figures(
        chrome: webdriver.Chrome, report: tuple[Path, list[Path]], tmp_path: Path) -> None:
    out, runs = report
    chrome.get(out.as_uri())
    WebDriverWait(chrome, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && "
        "Array.from(document.images).every(i => i.complete)"))

    errors = [e for e in chrome.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []

    images: list[dict[str, Any]] = chrome.execute_script(
        "return Array.from(document.images).map(i => ({alt: i.alt, w: i.naturalWidth, "
        "h: i.naturalHeight, shown: i.getBoundingClientRect().width}))")
    assert len(images) == 2
    assert all(i["w"] > 0 and i["h"] > 0 and i["shown"] > 0 for i in images), images

    fetched = chrome.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('data:'))")
    assert fetched == []

    cells: list[dict[str, str]] = chrome.execute_script(
        "return Array.from(document.querySelectorAll('td[data-figure]')).map(td => "
        "({run: td.dataset.run, figure: td.dataset.figure, value: td.dataset.value, "
        "text: td.innerText}))")
    for d in runs:
        written = json.loads((d / "verdict.json").read_text())
        shown = {c["figure"]: c for c in cells if c["run"] == d.name}
        assert json.loads(shown.pop("passed")["value"]) == written["passed"]
        assert len(shown) >= 10
        for figure, cell in shown.items():
            assert json.loads(cell["value"]) == written["figures"][figure], figure
    checks = chrome.execute_script(
        "return Array.from(document.querySelectorAll('td[data-check]')).map(td => "
        "td.dataset.check)")
    assert checks == ["equal", "equal"]
    # What a person reads in the table is the verdict's number.
    window = next(c for c in cells if c["run"] == "off"
                  and c["figure"] == "regional_empty_window")
    assert window["text"] == "15"

    shot = tmp_path / "report.png"
    chrome.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
