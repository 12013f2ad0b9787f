"""A person enrolls in the browser, keyboard only: sign in, create a speaker, read and record prompted sentences with
the (fake) microphone, upload two files with a transcripts file, personalize and watch it live, read the result,
try it, and roll a version out and back with a reason. axe-core runs in the page at each state (no serious or
critical violation), a screenshot of each state is saved, and the server side is checked: the recordings decode,
are speech, and carry the sentences that were shown.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from app.settings import Settings
from hra.audio import decode_audio
from storage.db import make_engine, make_session_factory
from storage.models import Utterance
from storage.objects import LocalObjectStore
from tests.web.conftest import FIXTURES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RECORDINGS = 5  # sentences recorded in the page (one more is skipped, one re-recorded)
RECORD_SECONDS = 1.8
FILES = ["eval-000.flac", "eval-001.flac"]


# ---- helpers ----------------------------------------------------------------------------------------------


def wait_for(driver: WebDriver, condition, timeout: float = 30.0, message: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message)


def dataset(driver: WebDriver, name: str) -> str | None:
    return driver.execute_script("return document.body.dataset[arguments[0]] || null", name)


def active_id(driver: WebDriver) -> str:
    return driver.switch_to.active_element.get_attribute("id") or ""


def press(driver: WebDriver, *keys: str) -> None:
    """Keys to whatever has the focus, as a keyboard user would."""
    driver.switch_to.active_element.send_keys(*keys)


def tab_to(driver: WebDriver, element_id: str, limit: int = 40, backwards: bool = False) -> None:
    """Tab (or Shift+Tab) until ``element_id`` has the focus; fails if it is not reachable by keyboard."""
    for _ in range(limit):
        if active_id(driver) == element_id:
            return
        press(driver, Keys.SHIFT, Keys.TAB) if backwards else press(driver, Keys.TAB)
    assert active_id(driver) == element_id, f"{element_id} not reachable with the keyboard"


def focus_is_visible(driver: WebDriver) -> bool:
    return driver.execute_script(
        "const s = getComputedStyle(document.activeElement);"
        "return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;"
    )


def go_to_step(driver: WebDriver, panel: str) -> None:
    """The step navigation, by keyboard: focus the step's button and press Enter."""
    button = driver.find_element(By.CSS_SELECTOR, f'.step[data-panel="{panel}"]')
    driver.execute_script("arguments[0].focus()", button)
    press(driver, Keys.ENTER)
    wait_for(driver, lambda d: dataset(d, "panel") == panel, message=f"panel {panel}")


def screenshot(driver: WebDriver, folder: Path, name: str) -> Path:
    """The whole page (beyond the window), as PNG."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1},
        },
    )
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def check_accessibility(driver: WebDriver, axe_source: str, state: str, folder: Path) -> list[dict]:
    """axe-core in the page: no serious or critical violation. Every violation is written next to the shots."""
    if not driver.execute_script("return typeof window.axe !== 'undefined'"):
        driver.execute_script(axe_source)
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        "  .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        "      nodes: v.nodes.map(n => n.target.join(' '))}))))"
        "  .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
    )
    (folder / f"axe-{state}.json").write_text(json.dumps(violations, indent=2))
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"axe at {state}: {json.dumps(serious, indent=2)}"
    return violations


def axe_notices_a_planted_violation(driver: WebDriver) -> None:
    """Guards the checks above against passing vacuously: a button without a name is a critical violation."""
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const b = document.createElement('button'); b.id = 'planted'; document.body.append(b);"
        "axe.run('#planted', {runOnly: ['button-name']})"
        "  .then(r => { b.remove(); done(r.violations.map(v => v.impact)); })"
        "  .catch(e => { b.remove(); done(['error: ' + e]); });"
    )
    assert violations == ["critical"], violations


def uploads_done(driver: WebDriver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, '#uploads li[data-state="done"]'))


def upload_failures(driver: WebDriver) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, '#uploads li[data-state="failed"]')]


def stored_utterances(var_dir: Path, speaker_id: str) -> list[tuple[Utterance, bytes]]:
    """What the server stored, read from its database and object store directly."""
    settings = Settings(_env_file=None, var_dir=var_dir)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as db:
            rows = list(
                db.scalars(
                    select(Utterance)
                    .where(Utterance.speaker_id == uuid.UUID(speaker_id))
                    .order_by(Utterance.created_at, Utterance.id)
                )
            )
            store = LocalObjectStore(settings.object_store_dir)
            return [(row, store.get(row.object_key)) for row in rows]
    finally:
        engine.dispose()


# ---- the walk-through -------------------------------------------------------------------------------------


def test_enroll_personalize_try_and_roll_back_in_the_browser(
    browser: WebDriver, web_service, axe_source: str, screenshot_dir: Path, tmp_path: Path
) -> None:
    driver = browser
    shots = screenshot_dir
    started = time.monotonic()
    api = httpx.Client(
        base_url=web_service.base_url, headers={"Authorization": f"Bearer {web_service.api_key}"}, timeout=60
    )
    try:
        _walk_through(driver, shots, axe_source, api, web_service, tmp_path)
    except BaseException:
        screenshot(driver, shots, "zz-failure")
        logs = driver.get_log("browser")
        (shots / "browser-console.json").write_text(json.dumps(logs, indent=2))
        print(f"browser console: {json.dumps(logs, indent=2)}\n{web_service.logs()}")
        raise
    finally:
        api.close()
    print(f"browser walk-through: {time.monotonic() - started:.0f} s; screenshots in {shots}")


def _walk_through(driver, shots, axe_source, api, web_service, tmp_path) -> None:
    # 1. The page at / and the sign-in form; a wrong key is refused in words, the right one signs in.
    driver.get(web_service.base_url + "/")
    wait_for(driver, lambda d: dataset(d, "ready") == "true", message="page ready")
    assert driver.title.startswith("Voice enrollment")
    assert not driver.find_element(By.ID, "session-box").is_displayed()
    assert not driver.find_element(By.ID, "steps").is_displayed()
    screenshot(driver, shots, "01-signin")
    check_accessibility(driver, axe_source, "01-signin", shots)
    axe_notices_a_planted_violation(driver)
    key_field = driver.find_element(By.ID, "api-key")
    key_field.send_keys("hra_not-a-key", Keys.ENTER)
    error = driver.find_element(By.ID, "api-key-error")
    wait_for(driver, lambda d: error.is_displayed() and "not accepted" in error.text, message="wrong key refused")
    assert key_field.get_attribute("aria-invalid") == "true"
    screenshot(driver, shots, "01-signin-wrong-key")
    key_field.clear()
    key_field.send_keys(web_service.api_key, Keys.ENTER)
    wait_for(driver, lambda d: dataset(d, "panel") == "speaker", message="signed in")
    assert web_service.api_key not in driver.current_url
    assert driver.execute_script("return sessionStorage.getItem('hra.apiKey')") == web_service.api_key
    assert driver.execute_script("return localStorage.length") == 0
    assert "hra.apiKey" not in driver.execute_script("return document.cookie")

    # 2. Create a speaker (keyboard: type, Enter).
    screenshot(driver, shots, "02-speaker")
    check_accessibility(driver, axe_source, "02-speaker", shots)
    driver.find_element(By.ID, "speaker-name").send_keys("Ana (browser test)", Keys.ENTER)
    wait_for(driver, lambda d: dataset(d, "panel") == "record", message="speaker created")
    speaker_id = driver.execute_script("return sessionStorage.getItem('hra.speakerId')")
    assert api.get(f"/v1/speakers/{speaker_id}").json()["display_name"] == "Ana (browser test)"

    # 3. Record prompted sentences, keyboard only: skip one, re-record one, keep five.
    tab_to(driver, "skip-prompt")
    skipped = driver.find_element(By.ID, "prompt-text").text
    press(driver, Keys.ENTER)
    wait_for(driver, lambda d: d.find_element(By.ID, "prompt-text").text != skipped, message="skipped")
    tab_to(driver, "record-toggle", backwards=True)
    assert focus_is_visible(driver), "the keyboard focus must be visible"
    recorded: list[str] = []
    lengths: list[float] = []  # seconds between the keys that started and stopped each kept recording
    for i in range(RECORDINGS):
        assert active_id(driver) == "record-toggle", f"focus is on {active_id(driver)!r}, not the record button"
        prompt = driver.find_element(By.ID, "prompt-text").text
        press(driver, Keys.ENTER)  # start
        began = time.monotonic()
        wait_for(driver, lambda d: dataset(d, "recording") == "true", message="recording started")
        levels = []  # the meter, sampled while recording (the fixture has pauses: its loudest moment counts)
        while time.monotonic() - began < RECORD_SECONDS:
            levels.append(float(driver.find_element(By.ID, "record-level").get_attribute("value")))
            time.sleep(0.1)
        assert max(levels) > 0.3, f"the level meter shows no sound ({max(levels)})"
        if i == 0:
            screenshot(driver, shots, "03-recording")
            check_accessibility(driver, axe_source, "03-recording", shots)
        press(driver, Keys.ENTER)  # stop: the focus moves to "keep"
        length = time.monotonic() - began
        wait_for(driver, lambda d: active_id(d) == "keep-take", message="recording ready for review")
        if i == 1:  # record it again
            tab_to(driver, "redo-take")
            press(driver, Keys.ENTER)
            wait_for(driver, lambda d: dataset(d, "recording") == "true", message="re-recording")
            wait_for(driver, lambda d: active_id(d) == "record-toggle")
            began = time.monotonic()
            time.sleep(RECORD_SECONDS)
            press(driver, Keys.ENTER)
            length = time.monotonic() - began
            wait_for(driver, lambda d: active_id(d) == "keep-take", message="re-recording ready")
        if i == 0:
            assert driver.find_element(By.ID, "take-audio").get_attribute("src").startswith("blob:")
            screenshot(driver, shots, "04-review")
        press(driver, Keys.ENTER)  # keep: uploads in the background, next sentence
        recorded.append(prompt)
        lengths.append(length)
        wait_for(driver, lambda d: active_id(d) == "record-toggle", message="next sentence")
    assert skipped not in recorded
    wait_for(
        driver, lambda d: uploads_done(d) == RECORDINGS or upload_failures(d), timeout=90, message="uploads"
    )
    assert not upload_failures(driver)
    wait_for(driver, lambda d: "5 recordings" in d.find_element(By.ID, "speaker-bar").text, message="counter")
    screenshot(driver, shots, "05-uploaded")
    check_accessibility(driver, axe_source, "05-uploaded", shots)

    # 4. Upload two existing files with a transcripts file (the fixture's manifest lines for them).
    go_to_step(driver, "files")
    rows = [json.loads(line) for line in (FIXTURES / "manifest.jsonl").read_text().splitlines() if line.strip()]
    manifest = {row["file"]: row for row in rows}
    transcripts = tmp_path / "manifest.jsonl"
    transcripts.write_text("".join(json.dumps(manifest[name]) + "\n" for name in FILES))
    driver.find_element(By.ID, "files-input").send_keys("\n".join(str(FIXTURES / name) for name in FILES))
    driver.find_element(By.ID, "transcripts-input").send_keys(str(transcripts))
    wait_for(driver, lambda d: d.find_element(By.ID, "file-text-1").get_attribute("value"), message="transcripts")
    assert driver.find_element(By.ID, "file-text-0").get_attribute("value") == manifest[FILES[0]]["text"]
    screenshot(driver, shots, "06-files")
    check_accessibility(driver, axe_source, "06-files", shots)
    upload_button = driver.find_element(By.ID, "files-upload")
    driver.execute_script("arguments[0].focus()", upload_button)
    press(driver, Keys.ENTER)
    wait_for(
        driver, lambda d: uploads_done(d) == RECORDINGS + len(FILES) or upload_failures(d), timeout=60,
        message="file uploads",
    )
    assert not upload_failures(driver)

    # Server side: every recording decodes, is speech of about the recorded length, and carries the sentence shown.
    # (Two uploads run at a time, so the server's order may differ from the recording order.)
    stored = {row.transcript: (row, data) for row, data in stored_utterances(web_service.log_dir, speaker_id)}
    assert sorted(stored) == sorted(recorded + [manifest[name]["text"] for name in FILES])
    for name in FILES:
        assert stored[manifest[name]["text"]][0].split.value == "eval"
    # One in four kept aside, in the order they were kept: train, eval, train, train, train.
    for prompt, length, split in zip(recorded, lengths, ["train", "eval", "train", "train", "train"]):
        row, data = stored[prompt]
        assert row.split.value == split, (prompt, row.split)
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert row.original_sample_rate == 16000 and row.original_channels == 1  # the page's WAV
        decoded = decode_audio(data)
        assert abs(decoded.duration_s - length) < 0.8, (decoded.duration_s, length)
        samples = decoded.waveform.numpy()
        assert float(np.sqrt(np.mean(samples**2))) > 0.01, f"the recording of {prompt!r} is silent"
    listed = api.get(f"/v1/speakers/{speaker_id}/utterances").json()["items"]
    assert len(listed) == RECORDINGS + len(FILES)

    # 5. Personalize, watched live over the event stream, then the result.
    go_to_step(driver, "adapt")
    seconds = driver.find_element(By.ID, "train-seconds")
    seconds.send_keys("6")
    start = driver.find_element(By.ID, "start-adaptation")
    driver.execute_script("arguments[0].focus()", start)
    press(driver, Keys.ENTER)
    wait_for(driver, lambda d: dataset(d, "jobUpdates") == "live", message="live updates")
    wait_for(
        driver,
        lambda d: dataset(d, "jobState") in ("training", "evaluating", "promoted", "rejected", "failed"),
        timeout=60,
        message="job started",
    )
    try:
        wait_for(
            driver, lambda d: float(d.find_element(By.ID, "job-progress").get_attribute("value")) > 0.05,
            timeout=90, message="progress",
        )
    finally:
        screenshot(driver, shots, "07-training")
    check_accessibility(driver, axe_source, "07-training", shots)
    wait_for(driver, lambda d: dataset(d, "result") is not None, timeout=240, message="job finished")
    assert dataset(driver, "jobUpdates") == "live", "the live stream must carry the job to its end"
    speaker = api.get(f"/v1/speakers/{speaker_id}").json()
    heads = api.get(f"/v1/speakers/{speaker_id}/heads").json()["items"]
    assert len(heads) == 1
    job = api.get(f"/v1/jobs/{heads[0]['job_id']}").json()
    assert job["state"] in ("promoted", "rejected"), job
    assert dataset(driver, "result") == job["evaluation"]["decision"]
    decision = driver.find_element(By.ID, "result-decision").text
    assert decision.startswith("Promoted" if job["state"] == "promoted" else "Not promoted")
    assert driver.find_element(By.ID, "result-explanation").text
    wer_rows = driver.find_elements(By.CSS_SELECTOR, "#result-wer tbody tr")
    assert [r.find_element(By.TAG_NAME, "th").text for r in wer_rows] == ["Base model", "Personalized (new)"]
    utterance_rows = driver.find_elements(By.CSS_SELECTOR, "#result-utterances tbody tr")
    assert len(utterance_rows) == job["evaluation"]["eval_utterances"] == 3
    assert driver.find_elements(By.CSS_SELECTOR, "#result-utterances mark.diff"), "differing words are marked"
    assert speaker["utterances"] == {"train": 4, "eval": 3}
    screenshot(driver, shots, "08-result")
    check_accessibility(driver, axe_source, "08-result", shots)

    # 6. Try it: record a sentence, base and personalized transcripts side by side.
    go_to_step(driver, "try")
    tab_to(driver, "try-toggle")
    press(driver, Keys.ENTER)
    time.sleep(2.5)
    press(driver, Keys.ENTER)
    wait_for(driver, lambda d: dataset(d, "tried") == "true", timeout=90, message="transcribed")
    base_text = driver.find_element(By.ID, "try-base").text
    assert base_text and base_text != "Transcribing…"
    assert driver.find_element(By.ID, "try-personal").text
    screenshot(driver, shots, "09-try")
    check_accessibility(driver, axe_source, "09-try", shots)

    # 7. Versions: put the version in use or take it out, with a reason, and back (who and why are kept).
    go_to_step(driver, "versions")
    wait_for(driver, lambda d: d.find_element(By.ID, "versions-table").is_displayed(), message="versions")
    screenshot(driver, shots, "10-versions")
    check_accessibility(driver, axe_source, "10-versions", shots)
    head = heads[0]
    first, second = ("retire", "promote") if head["status"] == "in_service" else ("promote", "retire")
    for n, action in enumerate((first, second)):
        label = "Use version 1" if action == "promote" else "Stop using version 1"
        button = driver.find_element(By.XPATH, f'//table[@id="versions-table"]//button[normalize-space()="{label}"]')
        driver.execute_script("arguments[0].focus()", button)
        press(driver, Keys.ENTER)
        wait_for(driver, lambda d: d.find_element(By.ID, "change-dialog").get_attribute("open") is not None)
        assert active_id(driver) == "change-reason"
        reason = f"browser test {n + 1}: {action} by hand"
        press(driver, reason)
        if n == 0:
            screenshot(driver, shots, "11-change-dialog")
            check_accessibility(driver, axe_source, "11-change-dialog", shots)
        tab_to(driver, "change-confirm")
        press(driver, Keys.ENTER)
        wait_for(driver, lambda d: d.find_element(By.ID, "change-dialog").get_attribute("open") is None)
        expected = "in_service" if action == "promote" else "retired"
        wait_for(
            driver,
            lambda d, status=expected: d.find_elements(By.CSS_SELECTOR, f'#versions-table tr[data-status="{status}"]'),
            message=f"version {expected}",
        )
        assert api.get(f"/v1/heads/{head['id']}").json()["status"] == expected
    events = api.get(f"/v1/speakers/{speaker_id}/head-events").json()["items"]
    assert [e["action"] for e in events] == [second, first]  # newest first
    assert all(e["actor"].startswith("tenant default") for e in events)
    assert events[0]["reason"] == f"browser test 2: {second} by hand"
    assert len(driver.find_elements(By.CSS_SELECTOR, "#events li")) == 2
    screenshot(driver, shots, "12-versions-after")
    check_accessibility(driver, axe_source, "12-versions-after", shots)
