"""The Python client (app.client) and the remote CLI verbs (app.cli_remote) against a real uvicorn server.

The server runs in a thread of this process over the test's own services (SQLite copy, local object store, the
fake model, a Celery queue on Redis); the CLI runs as ``python -m app.cli`` subprocesses; ``adapt --wait`` is
served by a real worker process whose model is the fake (tests/workers/fake_worker.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from app import schemas
from app.client import HRAClient, errors, models, resolve_config
from app.client.config import DEFAULT_URL
from app.security import create_api_key
from tests.app.fakes import FakeML, tone
from tests.app.live_server import free_port, redis_queues, serving
from tests.app.support import make_services, make_settings

REPO = Path(__file__).resolve().parents[2]
SENTENCES = [
    "please call my sister today",
    "the weather is lovely outside",
    "i would like a cup of tea",
    "turn the kitchen lights off",
    "open the front door now",
    "what time is the bus",
    "read me the latest news",
    "set an alarm for seven",
    "play some quiet music please",
]


@dataclass
class Live:
    url: str
    api_key: str
    services: object
    ml: FakeML
    tmp: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory, migrated_sqlite_template):
    tmp = tmp_path_factory.mktemp("live")
    shutil.copyfile(migrated_sqlite_template, tmp / "hra.db")
    ml = FakeML()
    services = make_services(make_settings(tmp, f"sqlite:///{tmp / 'hra.db'}"), ml)
    with services.session_factory() as db:
        _, key = create_api_key(db, "acme")
        db.commit()
    with redis_queues(services), serving(services) as url:
        yield Live(url, key, services, ml, tmp)
    services.session_factory.kw["bind"].dispose()


def recordings(live: Live, directory: Path, sentences: list[str], first_freq: float, split_every: int = 3) -> Path:
    """WAV tones with a transcripts.tsv; every ``split_every``-th one held out. The fake model learns them."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(sentences):
        audio = tone(seconds=0.6 + 0.1 * i, freq=first_freq + 23 * i)
        (directory / f"utt{i:02d}.wav").write_bytes(audio)
        live.ml.learn(audio, text)
        rows.append(f"utt{i:02d}\t{text}\t{'eval' if i % split_every == split_every - 1 else 'train'}")
    (directory / "transcripts.tsv").write_text("name\ttext\tsplit\n" + "\n".join(rows) + "\n")
    return directory


def hra(live: Live, *args: str, key: str | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HRA_URL", "HRA_API_KEY", "HRA_CONFIG")}
    env.update(XDG_CONFIG_HOME=str(live.tmp / "no-config"), **(extra_env or {}))
    server = ["--url", live.url, "--api-key", key or live.api_key] if key != "" else []
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args, *server],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def client(live: Live, key: str | None = None) -> HRAClient:
    return HRAClient(live.url, live.api_key if key is None else key)


# ---- client --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_model", "server_model"),
    [
        (models.Speaker, schemas.SpeakerOut),
        (models.Utterance, schemas.UtteranceOut),
        (models.Job, schemas.JobOut),
        (models.Evaluation, schemas.EvaluationOut),
        (models.Head, schemas.HeadOut),
        (models.Transcription, schemas.TranscriptionOut),
    ],
)
def test_client_models_only_name_fields_the_server_sends(client_model, server_model):
    assert set(client_model.model_fields) <= set(server_model.model_fields)


def test_config_comes_from_arguments_then_env_then_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('url = "http://file:1"\napi_key = "from-file"\n')
    env = {"HRA_CONFIG": str(config)}
    assert (resolve_config(env=env).url, resolve_config(env=env).api_key) == ("http://file:1", "from-file")
    env["HRA_API_KEY"] = "from-env"
    assert (resolve_config(env=env).url, resolve_config(env=env).api_key) == ("http://file:1", "from-env")
    resolved = resolve_config(url="http://arg:2/", env=env)
    assert (resolved.url, resolved.api_key) == ("http://arg:2", "from-env")
    assert resolve_config(env={"XDG_CONFIG_HOME": str(tmp_path / "none")}).url == DEFAULT_URL
    with pytest.raises(errors.ConfigError, match="does not exist"):
        resolve_config(config_path=tmp_path / "missing.toml", env={})
    config.write_text('url = "http://file:1"\napikey = "typo"\n')
    with pytest.raises(errors.ConfigError, match="apikey"):
        resolve_config(env={"HRA_CONFIG": str(config)})


def test_client_errors_are_typed_with_the_servers_code(live):
    with client(live, key="hra_not-a-key") as bad, pytest.raises(errors.Unauthorized) as unauthorized:
        bad.list_speakers()
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
    with client(live) as hra_client:
        with pytest.raises(errors.NotFound) as missing:
            hra_client.get_speaker(str(uuid.uuid4()))
        assert (missing.value.status, missing.value.code) == (404, "speaker_not_found")
        with pytest.raises(errors.NotFound, match="nobody"):
            hra_client.resolve_speaker("nobody")
        speaker = hra_client.create_speaker("typed-errors")
        with pytest.raises(errors.Conflict) as conflict:
            hra_client.create_speaker("typed-errors")
        assert conflict.value.code == "speaker_exists"
        assert hra_client.ensure_speaker("typed-errors") == (speaker, False)
        with pytest.raises(errors.Unprocessable) as garbage:
            hra_client.upload_utterance(speaker.id, b"not audio at all", "some words")
        assert garbage.value.code == "invalid_audio"
        with pytest.raises(errors.NotFound) as no_job:
            hra_client.get_job(str(uuid.uuid4()))
        assert no_job.value.code == "job_not_found"
    with pytest.raises(errors.TransportError):
        HRAClient(f"http://127.0.0.1:{free_port()}", "k").list_speakers()


def test_wait_for_job_reports_each_poll_and_times_out_with_the_state(live, tmp_path):
    with client(live) as hra_client:
        speaker = hra_client.create_speaker("waits")
        for i, text in enumerate(SENTENCES[:6]):
            hra_client.upload_utterance(speaker.id, tone(0.5, 900 + 31 * i), text, "eval" if i >= 4 else "train")
        job = hra_client.start_adaptation(speaker.id)  # no worker listens: the job stays queued
        seen = []
        with pytest.raises(errors.JobWaitTimeout) as timeout:
            hra_client.wait_for_job(job.id, on_update=seen.append, poll_interval_s=0.1, timeout_s=0.5)
        assert timeout.value.state == "queued"
        assert len(seen) >= 3 and {j.state for j in seen} == {"queued"}
        cancelled = hra_client.cancel_job(job.id)
        assert hra_client.wait_for_job(job.id, timeout_s=5).state == cancelled.state == "cancelled"


def test_a_download_whose_checksum_differs_leaves_no_file(tmp_path):
    def tampered(request: httpx.Request) -> httpx.Response:
        headers = {"X-Content-SHA256": "0" * 64, "Content-Disposition": 'attachment; filename="head-x-v1.safetensors"'}
        return httpx.Response(200, content=b"not the announced bytes", headers=headers)

    tampering = httpx.MockTransport(tampered)
    with HRAClient("http://hra.test", "k", transport=tampering) as hra, pytest.raises(errors.ArtifactIntegrityError):
        hra.download_head("h1", f"{tmp_path}/new-dir/")
    assert list((tmp_path / "new-dir").iterdir()) == []


# ---- CLI -----------------------------------------------------------------------------------------------------


def test_enroll_uploads_a_folder_and_a_rerun_skips_what_is_stored(live, tmp_path):
    folder = recordings(live, tmp_path / "ana", SENTENCES[:6], first_freq=300)
    first = hra(live, "enroll", str(folder), "--speaker", "ana-enroll")
    assert first.returncode == 0, first.stderr
    assert "uploaded 6, already stored 0, failed 0" in first.stdout
    assert "4 train + 2 held-out" in first.stdout
    with client(live) as hra_client:
        speaker = hra_client.resolve_speaker("ana-enroll")
        stored = {u.transcript: u.split for u in hra_client.list_utterances(speaker.id)}
    assert stored == {text: "eval" if i % 3 == 2 else "train" for i, text in enumerate(SENTENCES[:6])}

    again = hra(live, "enroll", str(folder), "--speaker", "ana-enroll")
    assert again.returncode == 0, again.stderr
    assert "uploaded 0, already stored 6" in again.stdout

    # Without the state file (lost, or the run died before writing it) the listing still recognizes them.
    (folder / ".hra-enroll.json").unlink()
    (folder / "utt99.wav").write_bytes(tone(1.0, 2000))
    with (folder / "transcripts.tsv").open("a") as f:
        f.write("utt99\tone more sentence here\n")
    resumed = hra(live, "enroll", str(folder), "--speaker", "ana-enroll")
    assert resumed.returncode == 0, resumed.stderr
    assert "uploaded 1, already stored 6" in resumed.stdout
    with client(live) as hra_client:
        assert len(hra_client.list_utterances(speaker.id)) == 7


def test_enroll_reports_bad_files_and_missing_audio_and_exits_1(live, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "good.wav").write_bytes(tone(0.8, 640))
    (folder / "noise.wav").write_bytes(b"RIFF this is not a wav file")
    (folder / "metadata.csv").write_text("good|a good recording\nnoise|a broken file\nghost|no file for this\n")
    result = hra(live, "enroll", str(folder), "--speaker", "bad-files")
    assert result.returncode == 1
    assert "uploaded 1, already stored 0, failed 1" in result.stdout
    assert "failed: noise: invalid_audio" in result.stderr
    assert "no audio file for 'ghost'" in result.stderr


def test_cli_errors_name_the_problem(live, tmp_path):
    missing = hra(live, "heads", "list", "nobody-here")
    assert missing.returncode == 1 and "speaker_not_found" in missing.stderr
    wrong_key = hra(live, "speakers", "list", key="hra_wrong")
    assert wrong_key.returncode == 1 and "invalid or revoked API key" in wrong_key.stderr
    no_key = hra(live, "speakers", "list", key="")
    assert no_key.returncode == 2 and "no API key" in no_key.stderr
    config = tmp_path / "hra.toml"
    config.write_text(f'url = "{live.url}"\napi_key = "{live.api_key}"\n')
    from_file = hra(live, "speakers", "list", "--config", str(config), key="")
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.startswith("EXTERNAL ID")


def start_fake_worker(live: Live, tmp_path: Path) -> subprocess.Popen:
    settings = live.services.settings
    config = tmp_path / "worker.json"
    config.write_text(json.dumps({"truth": live.ml.truth, "train_steps": 6, "step_sleep_s": 0.3}))
    env = {
        **os.environ,
        "HRA_VAR_DIR": str(settings.var_dir),
        "HRA_DATABASE_URL": settings.database_url,
        "HRA_BROKER_URL": settings.broker_url,
        "HRA_OBJECT_STORE": "local",
        "HRA_OBJECT_STORE_DIR": str(settings.object_store_dir),
        "HRA_TRAIN_QUEUE": settings.train_queue,
        "HRA_EVAL_QUEUE": settings.eval_queue,
        "HRA_MIN_TRAIN_UTTERANCES": str(settings.min_train_utterances),
        "HRA_MIN_EVAL_UTTERANCES": str(settings.min_eval_utterances),
        "HRA_GATE_MIN_EVAL_WORDS": str(settings.gate_min_eval_words),
        "HRA_GATE_CONFIDENCE": str(settings.gate_confidence),
        "HRA_GATE_BOOTSTRAP_SAMPLES": str(settings.gate_bootstrap_samples),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers.fake_worker", str(config)],
        cwd=REPO, env=env, stdout=(tmp_path / "worker.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_adapt_waits_with_progress_then_heads_and_transcribe_use_the_promoted_head(live, tmp_path):
    folder = recordings(live, tmp_path / "bo", SENTENCES, first_freq=1500)
    assert hra(live, "enroll", str(folder), "--speaker", "bo").returncode == 0
    worker = start_fake_worker(live, tmp_path)
    try:
        adapted = hra(live, "adapt", "bo", "--wait", "--poll-interval", "0.2", "--timeout", "90")
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    assert adapted.returncode == 0, adapted.stderr + adapted.stdout + log
    # Not a terminal: one progress line per state and tenth of progress (the fake's evaluation is too quick for
    # a poll to catch it; the terminal session in the README shows it with the real model).
    progress = [line for line in adapted.stderr.splitlines() if line.startswith("job ") and "%" in line]
    percents = [int(line.rsplit("%", 1)[0].split()[-1]) for line in progress]
    assert percents == sorted(percents) and percents[-1] == 100, adapted.stderr
    assert any(": training " in line and "(step " in line and "loss " in line for line in progress), adapted.stderr
    assert progress[-1].endswith(": promoted 100%")
    table = adapted.stdout
    assert ": promoted (head " in table
    assert "  base WER         52.9%\n" in table  # the fake base model gets about half the words of each sentence
    assert "  in-service WER       -\n" in table and "  candidate WER     0.0%  (-100% vs base)\n" in table
    assert "  decision        promote\n" in table and "  reason          " in table

    listed = hra(live, "heads", "list", "bo")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["VERSION", "STATUS", "TYPE"] and row.split()[:3] == ["v1", "in_service", "linear"]
    as_json = json.loads(hra(live, "heads", "list", "bo", "--json").stdout)
    downloaded = hra(live, "heads", "download", "bo", "-o", str(tmp_path))
    assert downloaded.returncode == 0, downloaded.stderr
    path = Path(downloaded.stdout.strip())
    assert path.parent == tmp_path and path.name == f"head-{as_json[0]['speaker_id']}-v1.safetensors"
    assert json.loads(path.read_bytes())["fake_head"] is True  # the fake model's head format
    with client(live) as hra_client:  # a directory that does not exist yet, named by its trailing slash
        again = hra_client.download_head(as_json[0]["id"], f"{tmp_path}/heads/")
    assert again == tmp_path / "heads" / path.name and again.read_bytes() == path.read_bytes()
    no_version = hra(live, "heads", "download", "bo", "--version", "7")
    assert no_version.returncode == 1 and "no head version 7" in no_version.stderr

    sample = folder / "utt01.wav"  # 0.7 s; the fake knows its sentence
    personal = hra(live, "transcribe", str(sample), "--speaker", "bo", "--format", "json")
    assert personal.returncode == 0, personal.stderr
    body = json.loads(personal.stdout)
    assert body["text"] == SENTENCES[1] and body["head_id"] == as_json[0]["id"] and body["duration_s"] == 0.7
    base = hra(live, "transcribe", str(sample))
    assert base.stdout == "the weather zzz zzz zzz\n"  # the fake base model: round(half) the words right
    srt = hra(live, "transcribe", str(sample), "--speaker", "bo", "--format", "srt")
    assert srt.stdout == f"1\n00:00:00,000 --> 00:00:00,700\n{SENTENCES[1]}\n"
    vtt = hra(live, "transcribe", str(sample), "--speaker", "bo", "--format", "vtt")
    assert vtt.stdout == f"WEBVTT\n\n00:00:00.000 --> 00:00:00.700\n{SENTENCES[1]}\n"
    assert sf.info(str(sample)).duration == pytest.approx(0.7)

    retired = hra(live, "heads", "retire", "bo", "--reason", "cli test: back to the base")
    assert retired.returncode == 0, retired.stderr
    assert hra(live, "transcribe", str(sample), "--speaker", "bo").stdout == "the weather zzz zzz zzz\n"
    assert hra(live, "heads", "list", "bo").stdout.splitlines()[1].split()[:2] == ["v1", "retired"]
    rolled = hra(live, "heads", "rollback", "bo", "--version", "1", "--reason", "cli test: v1 again")
    assert rolled.returncode == 0 and "version 1 of bo is in service" in rolled.stdout, rolled.stderr
    assert hra(live, "transcribe", str(sample), "--speaker", "bo").stdout == f"{SENTENCES[1]}\n"
    assert hra(live, "heads", "rollback", "bo", "--reason", "no version").returncode == 2  # --version is required


def test_a_quota_answer_is_a_typed_quota_error():
    body = {"error": {"code": "quota_exceeded", "message": "speakers quota: limit 3, in use 3", "quota": "speakers"}}
    transport = httpx.MockTransport(lambda request: httpx.Response(429, json=body))
    with HRAClient("http://hra.invalid", "key", transport=transport) as hra_client:
        with pytest.raises(errors.QuotaExceeded) as caught:
            hra_client.create_speaker("s4")
    assert caught.value.code == "quota_exceeded" and "limit 3" in str(caught.value)
