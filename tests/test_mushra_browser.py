"""End-to-end MUSHRA test in headless Chromium (Debian's ``chromium`` + ``chromedriver``,
driven by Selenium): open the page, play every condition, rate, submit, and find exactly
those ratings in the SQLite database; a bad submission from the page is rejected.

Skipped when chromium, chromedriver, selenium, scipy or av is missing, unless
``OPENCODEC_REQUIRE_BROWSER=1`` (as in CI), which turns the skip into a failure. Selenium is
always given both binaries, so it never downloads a browser or a driver.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sqlite3
import typing as tp
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 24000
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage",
                "--window-size=1200,900")
WAIT_S = 20


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _browser_or_skip() -> tuple[str, str]:
    """(chromium, chromedriver) paths, once the Python packages the test needs are found;
    else skip, or fail under OPENCODEC_REQUIRE_BROWSER=1 (checked before anything imports
    them, so that CI can never skip this test)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    missing += [f"the {module} Python package" for module in ("selenium", "scipy", "av")
                if not _importable(module)]
    if missing:
        reason = (f"MUSHRA browser test needs {', '.join(missing)} (Debian: apt-get install chromium "
                  "chromium-driver; pip install selenium scipy av)")
        if os.environ.get("OPENCODEC_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " and OPENCODEC_REQUIRE_BROWSER=1 is set")
        pytest.skip(reason)
    return chromium, driver  # type: ignore[return-value]


@contextlib.contextmanager
def chromium_driver(profile: Path) -> tp.Iterator[tp.Any]:
    """A headless Chromium WebDriver with a fresh profile in ``profile`` (checked in the test
    body, so that a missing browser under OPENCODEC_REQUIRE_BROWSER=1 is a test failure)."""
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_script_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A 2-trial test (clean speech + music; hidden reference, anchor, Opus 12) being served."""
    _browser_or_skip()  # before the imports below need scipy and av
    from opencodec.eval.mushra import build as B
    from opencodec.eval.mushra import server as S

    root = tmp_path_factory.mktemp("mushra_browser")
    man = root / "manifests"
    man.mkdir()
    t = np.arange(int(0.6 * SR)) / SR
    for c, cat in enumerate(("clean_speech", "music")):
        x = sum(0.2 / k * np.sin(2 * np.pi * k * (180.0 + 90 * c) * t) for k in range(1, 6))
        x = (x + 0.05 * np.sin(2 * np.pi * 6000.0 * t)).astype(np.float32)
        sf.write(root / f"{cat}.wav", x, SR)
        (man / f"eval_{cat}.jsonl").write_text(json.dumps(
            {"category": cat, "item_id": f"{cat}_0", "path": f"../{cat}.wav", "sample_rate": SR,
             "channels": 1, "duration": 0.6}) + "\n")
    test = B.build_test(man, root / "test", baselines=["opus12"], items_per_category=1,
                        test_id="browser-test", quiet=True)
    server = S.make_server(test.root, port=0)
    S.serve_in_thread(server)
    yield test, server
    server.shutdown()
    server.server_close()


def _rows(db_path: Path) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT test_id, listener, trial_id, condition_id, system, rating "
                            "FROM ratings ORDER BY trial_id, condition_id").fetchall()


def _rating_for(system: str, trial_number: int) -> int:
    """The rating the 'listener' gives: hidden reference 100, anchor 17+, codec 63+."""
    return {"hidden-reference": 100, "anchor-3.5kHz": 17 + trial_number}.get(system, 63 + 5 * trial_number)


def test_mushra_page_end_to_end(served, tmp_path):
    with chromium_driver(tmp_path / "chromium_profile") as browser:
        _run_page(browser, *served)


def _run_page(browser: tp.Any, test: tp.Any, server: tp.Any) -> None:
    """Rate every trial like a listener, then check the database and bad submissions."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    system_of = {c.id: c.system for t in test.trials for c in t.conditions}
    browser.get(server.url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    assert browser.find_element(By.ID, "title").text == "MUSHRA test browser-test"
    assert "opus" not in browser.page_source.lower()

    # no listener id: the page refuses to start
    browser.find_element(By.ID, "start").click()
    assert "listener id" in browser.find_element(By.ID, "message").text
    browser.find_element(By.ID, "listener").send_keys("selenium-listener")
    browser.find_element(By.ID, "start").click()

    expected = []
    seen_trials = []
    for number in range(1, len(test.trials) + 1):
        screen = wait.until(EC.visibility_of_element_located((By.ID, "trial-screen")))
        wait.until(lambda d: d.find_element(By.ID, "trial-screen").get_attribute("data-trial-id")
                   not in seen_trials)
        trial_id = screen.get_attribute("data-trial-id")
        seen_trials.append(trial_id)
        assert browser.find_element(By.ID, "progress").text == f"Trial {number} of {len(test.trials)}"
        submit = browser.find_element(By.ID, "submit")
        boxes = browser.find_elements(By.CSS_SELECTOR, ".condition")
        trial = test.trial(trial_id)
        assert trial is not None
        shown = sorted(b.get_attribute("data-condition") for b in boxes)
        assert shown == sorted(c.id for c in trial.conditions)
        assert [b.find_element(By.TAG_NAME, "strong").text for b in boxes] == ["A", "B", "C"]
        # before playback every slider is locked and nothing can be submitted
        for box in boxes:
            assert box.get_attribute("data-played") == "false"
            assert not box.find_element(By.CSS_SELECTOR, ".rating").is_enabled()
        assert not submit.is_enabled()

        browser.find_element(By.ID, "play-reference").click()
        for box in boxes:
            box.find_element(By.CSS_SELECTOR, ".play").click()
            wait.until(lambda d, b=box: b.get_attribute("data-played") == "true")  # 'playing' fired
            slider = box.find_element(By.CSS_SELECTOR, ".rating")
            assert slider.is_enabled()
            value = _rating_for(system_of[box.get_attribute("data-condition")], number)
            # keyboard, as a listener could: Home -> 0, then one step up per point
            slider.send_keys(Keys.HOME + Keys.ARROW_UP * value)
            wait.until(lambda d, b=box, v=value: b.find_element(By.CSS_SELECTOR, ".value").text == str(v))
            assert box.get_attribute("data-rated") == "true"
            expected.append((test.test_id, "selenium-listener", trial_id, box.get_attribute("data-condition"),
                             system_of[box.get_attribute("data-condition")], float(value)))
        browser.find_element(By.ID, "stop").click()
        # the page saw real playback: every element has advanced or ended
        played = browser.execute_script(
            "return Array.from(document.querySelectorAll('.condition')).map(b => b.dataset.played)")
        assert played == ["true"] * len(boxes)
        assert f"{len(boxes)} of {len(boxes)} rated" in browser.find_element(By.ID, "status").text
        assert submit.is_enabled()
        submit.click()

    wait.until(EC.visibility_of_element_located((By.ID, "done-screen")))
    assert sorted(seen_trials) == [t.trial_id for t in test.trials]
    assert _rows(server.db_path) == sorted(expected)

    # bad submissions sent from the page are rejected with a message and store nothing
    trial = test.trials[0]
    good = {"test_id": test.test_id, "trial_id": trial.trial_id, "listener": "mallory",
            "ratings": [{"condition": c.id, "rating": 50} for c in trial.conditions]}
    bad = [
        ({**good, "ratings": good["ratings"][:-1]}, "missing rating(s)"),
        ({**good, "ratings": [{**good["ratings"][0], "rating": 150}] + good["ratings"][1:]}, "out of range"),
        ({**good, "test_id": "no-such-test"}, "unknown test id"),
        ({**good, "listener": ""}, "listener id is missing or empty"),
    ]
    for payload, message in bad:
        status, body = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/api/submit', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify(arguments[0])})"
            ".then(r => r.json().then(b => done([r.status, b])))"
            ".catch(e => done([0, {error: String(e)}]));", payload)
        assert status == 400 and body["ok"] is False and message in body["error"], (payload, body)
    assert _rows(server.db_path) == sorted(expected)

    # the screened results: the listener kept (hidden reference rated 100), exact means
    from opencodec.eval.mushra.report import ALL, make_report

    summary = make_report(test.root, server.db_path, test.root / "report")
    assert summary["kept"] == ["selenium-listener"] and summary["excluded"] == []
    for system in test.systems:
        values = [r[5] for r in expected if r[4] == system]
        assert summary["groups"][ALL][system]["mean"] == pytest.approx(sum(values) / len(values))
    assert (test.root / "report" / "mushra.png").is_file()

    # a returning listener resumes after the stored trials: here, straight to the end
    browser.get(server.url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    browser.find_element(By.ID, "listener").send_keys("selenium-listener" + Keys.ENTER)
    wait.until(EC.visibility_of_element_located((By.ID, "done-screen")))
    assert "2 trial(s) already stored" in browser.find_element(By.ID, "message").text
