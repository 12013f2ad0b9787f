"""The enrollment page in a real browser: Debian's headless Chromium driven by chromium-driver (selenium), with a fake
microphone that plays a WAV made from the pt-BR fixture, against the real service (``hra run``: API, train worker
and eval worker processes) with small adaptation budgets.

Needs ``chromium``, ``chromium-driver`` (Debian) and axe-core (``npm ci`` in tests/web): ``make test`` installs them.
Screenshots of each state go to ``var/web-screenshots/`` (``HRA_WEB_SCREENSHOTS`` overrides it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.e2e.conftest import HRA, REPO_ROOT, RunningService, free_port, spawn, stop, wait_ready

WEB_TESTS = Path(__file__).resolve().parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "speaker_ptbr"
CHROMIUM = os.environ.get("HRA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HRA_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
AXE = WEB_TESTS / "node_modules" / "axe-core" / "axe.min.js"
MISSING = "missing {what}: run `make test` (it installs chromium, chromium-driver and axe-core), or {how}"

# Small budgets, so that a job finishes in well under a minute on two cores.
SERVICE_ENV = {
    "HRA_MIN_TRAIN_UTTERANCES": "3",
    "HRA_MIN_EVAL_UTTERANCES": "1",
    "HRA_DEFAULT_TRAIN_SECONDS": "6",
    "HRA_DEFAULT_MAX_EPOCHS": "3",
    "HRA_GATE_MIN_EVAL_WORDS": "5",
    "HRA_GATE_BOOTSTRAP_SAMPLES": "200",
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    path = Path(os.environ.get("HRA_WEB_SCREENSHOTS", REPO_ROOT / "var" / "web-screenshots"))
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE.is_file() and shutil.which("npm"):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=WEB_TESTS, check=False, timeout=300
        )
    if not AXE.is_file():
        pytest.fail(MISSING.format(what=str(AXE), how="`cd tests/web && npm ci`"))
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def fake_microphone(tmp_path_factory) -> Path:
    """A WAV of four fixture utterances with pauses; Chromium's fake capture device plays it in a loop."""
    parts = [sf.read(FIXTURES / f"train-00{i}.flac", dtype="float32")[0] for i in range(4)]
    pause = np.zeros(8000, dtype=np.float32)
    audio = np.concatenate([np.concatenate([pause, part]) for part in parts])
    path = tmp_path_factory.mktemp("microphone") / "microphone.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def web_service(tmp_path_factory) -> Iterator[RunningService]:
    """`hra run` (as `make run` starts it) on a fresh var directory, with small adaptation budgets."""
    var_dir = tmp_path_factory.mktemp("web-var")
    port = free_port()
    api_key = f"web-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        **SERVICE_ENV,
        "HRA_VAR_DIR": str(var_dir),
        "PORT": str(port),
        "HRA_BOOTSTRAP_API_KEY": api_key,
    }
    proc = spawn([HRA, "run"], env, var_dir / "hra-run.log")
    service = RunningService(f"http://127.0.0.1:{port}", api_key, var_dir)
    try:
        wait_ready(service.base_url, [proc])
        yield service
    finally:
        stop([proc])


@pytest.fixture(scope="module")
def browser(fake_microphone, tmp_path_factory):
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            pytest.fail(MISSING.format(what=path, how=f"`apt-get install {package}`"))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1280,1000",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_microphone}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
