"""CTranslate2 decoding of the PyTorch encoder's output: agreement with the Python beam search on real recordings
(base and a head), the guards on the CTranslate2 path, and the ``HRA_DECODER`` setting reaching ``load_foundation``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from hra.audio import decode_audio
from hra.backbone.decoding_rules import DecodeResult, DecodingOptions
from hra.backbone.whisper import BackboneOptions

torch.set_num_threads(1)
FIXTURES = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "real_speech"  # recordings of real people
MANIFEST = [json.loads(line) for line in (FIXTURES / "manifest.jsonl").read_text().splitlines()]
# Four short recordings (1.1-7.1 s). On all 16 the float32 CTranslate2 decoder gives the Python decoder's tokens on
# 15 base (the other: a better-scoring hypothesis its search kept looking for, same WER) and 16 prior-head utterances
# (benchmarks/results/ct2_decoding.json); these four are equal.
FILES = ["librivox_0870.flac", "librivox_0880.flac", "librivox_0890.flac", "cards_001.flac"]




@pytest.fixture(scope="module")
def foundations():
    """The shipped foundation decoded by Python, and the same objects decoded by CTranslate2 (float32, one thread)."""
    from hra.backbone.ct2_decoding import Ct2Decoder, Ct2Options
    from hra.foundation import load_foundation

    python_f = load_foundation(decoder="python")
    bb = python_f.backbone
    ct2 = Ct2Decoder(bb.source["model_dir"], bb.tokenizer, bb.config.n_vocab, Ct2Options(threads=1))
    return python_f, dataclasses.replace(python_f, ct2_decoder=ct2)


@pytest.fixture(scope="module")
def waves():
    rows = {r["file"]: r for r in MANIFEST}
    return [decode_audio((FIXTURES / rows[f]["file"]).read_bytes()).waveform for f in FILES]


def _detailed(foundation, waves, heads, backbone=None):
    from hra.inference import SAMPLE_RATE, decode_encoded, encode_with_heads

    backbone = backbone or (foundation.backbone if heads[0] is not None else foundation.serving_base)
    encoder_out, batch, hook = encode_with_heads(foundation, waves, heads, backbone)
    durations = [w.numel() / SAMPLE_RATE for w in waves]
    with torch.inference_mode():
        return decode_encoded(foundation, backbone, encoder_out, durations, batch.frames, hook, detailed=True)


@pytest.mark.slow
def test_ct2_gives_the_python_decoders_tokens_on_real_speech_base(foundations, waves):
    python_f, ct2_f = foundations
    python = _detailed(python_f, waves, [None] * len(waves))
    ct2 = _detailed(ct2_f, waves, [None] * len(waves))
    assert [r.tokens for r in ct2] == [r.tokens for r in python]
    assert all(r.text for r in ct2)
    # the same float32 weights: the no-speech probability and average log-probability up to summation order
    for a, b in zip(ct2, python):
        assert a.no_speech_prob == pytest.approx(b.no_speech_prob, abs=1e-3)
        assert a.avg_logprob == pytest.approx(b.avg_logprob, abs=1e-3)


@pytest.mark.slow
def test_ct2_gives_the_python_decoders_tokens_with_a_head_batched(foundations, waves):
    """A head in the head context, four utterances of different lengths in one batch (padding masked in Python;
    CTranslate2 decodes each sample's own positions)."""
    from hra.inference import transcribe
    from hra.training.head import load_prior_head

    python_f, ct2_f = foundations
    head = load_prior_head(python_f, "linear")
    heads = [head] * len(waves)
    python = _detailed(python_f, waves, heads)
    ct2 = _detailed(ct2_f, waves, heads)
    assert [r.tokens for r in ct2] == [r.tokens for r in python]
    assert transcribe(ct2_f, waves, heads, batch_size=4) == [r.text for r in python]
    assert ct2_f.ct2_decoder.python_fallbacks == 0


@pytest.mark.slow
def test_the_base_decodes_in_int16_and_heads_in_float32_when_asked(foundations, waves):
    """``base_compute_type="int16"``: the base model's samples go to an int16 decoder (same text as float32 on these
    recordings), heads' to the float32 one; asking for the heads' own precision shares their decoder."""
    from hra.foundation import load_foundation
    from hra.inference import transcribe
    from hra.training.head import load_prior_head

    python_f, ct2_f = foundations
    f = load_foundation(decoder="ctranslate2", base_compute_type="int16", encoder_dtype="float32")
    # nothing of CTranslate2 is loaded until something decodes (a process that only trains never needs it)
    assert (f.ct2_decoder, f.base_ct2_decoder, f.decoder_kind) == (None, None, "ctranslate2")
    described = f.describe()  # says what will decode without building it
    assert (described["decoder"]["compute_type"], described["base_decoder"]["compute_type"]) == ("float32", "int16")
    assert f.ct2_decoder is None
    base_decoder, head_decoder = f.ct2_decoder_for(f.serving_base), f.ct2_decoder_for(f.backbone)
    assert (base_decoder.options.compute_type, head_decoder.options.compute_type) == ("int16", "float32")
    assert f.describe()["base_decoder"]["compute_type"] == "int16"
    head = load_prior_head(python_f, "linear")
    texts = transcribe(f, waves + waves, [None] * len(waves) + [head] * len(waves), batch_size=8)
    assert texts[: len(waves)] == transcribe(ct2_f, waves)  # float32 decoding of the base
    assert (base_decoder.samples, head_decoder.samples) == (len(waves), len(waves))
    shared = load_foundation(decoder="ctranslate2", base_compute_type="float32", encoder_dtype="float32")
    assert shared.ct2_decoder_for(shared.serving_base) is shared.ct2_decoder


@pytest.mark.slow
def test_ct2_token_budget_is_the_duration_bound(foundations, waves):
    """max_length carries the duration-based budget: 7.1 s at 0.5 token/s -> 4 tokens, in CTranslate2's own search
    and in the guarded result (which the Python decoder produces for a sample that reaches its budget)."""
    python_f, ct2_f = foundations
    tight = DecodingOptions(max_tokens_per_second=0.5, extra_tokens=0)
    backbone = python_f.serving_base.with_options(
        BackboneOptions(context=python_f.serving_base.options.context, decoding=tight))
    from hra.inference import encode_with_heads

    encoder_out, batch, _ = encode_with_heads(python_f, waves[:2], [None, None], backbone)
    limits = [tight.token_limit(w.numel() / 16000) for w in waves[:2]]
    assert limits == [4, 2]
    raw = ct2_f.ct2_decoder.generate_raw(encoder_out, batch.frames.tolist(), limits, tight)
    assert [len(tokens) for tokens, _, _ in raw] == [4, 4]  # one call: the group's largest budget ...
    results = _detailed(ct2_f, waves[:2], [None, None], backbone)
    assert [len(r.tokens) for r in results] == [4, 2]  # ... and each sample's own in the result
    assert [r.stop_reason for r in results] == ["length", "length"]
    assert [r.tokens for r in results] == [r.tokens for r in _detailed(python_f, waves[:2], [None, None], backbone)]


@pytest.mark.slow
def test_ct2_no_speech_rule_on_silence_and_noise_base_and_head(foundations):
    """Silence and faint noise give no text from the base; with the prior head silence gives none either and noise
    what the Python decoder gives (its no-speech probability, 0.46, is under the threshold in both)."""
    from hra.training.head import load_prior_head

    python_f, ct2_f = foundations
    g = torch.Generator().manual_seed(0)
    audio = [torch.zeros(16000 * 2), torch.randn(16000 * 2, generator=g) * 0.01]
    base = _detailed(ct2_f, audio, [None, None])
    assert [(r.text, r.stop_reason) for r in base] == [("", "no_speech"), ("", "no_speech")]
    head = load_prior_head(python_f, "linear")
    with_head = _detailed(ct2_f, audio, [head, head])
    assert (with_head[0].text, with_head[0].stop_reason) == ("", "no_speech")
    python = _detailed(python_f, audio, [head, head])
    assert [(r.text, r.stop_reason) for r in with_head] == [(r.text, r.stop_reason) for r in python]
    for a, b in zip(with_head + base, python + _detailed(python_f, audio, [None, None])):
        assert a.no_speech_prob == pytest.approx(b.no_speech_prob, abs=1e-3)


class _FakeCt2:
    """A Ct2Decoder whose search returns given tokens (the guards' logic without a model)."""

    def __init__(self, outputs):
        from hra.backbone.ct2_decoding import Ct2Decoder

        decoder = Ct2Decoder.__new__(Ct2Decoder)
        decoder.samples = decoder.python_fallbacks = 0

        class _Tok:
            @staticmethod
            def decode(ids):
                return " ".join(f"w{i}" for i in ids)

        decoder.tokenizer = _Tok()
        decoder.generate_raw = lambda enc, lengths, limits, options: outputs  # type: ignore[method-assign]
        self.decoder = decoder


def test_ct2_loop_and_compression_are_decoded_again_in_python():
    opts = DecodingOptions()
    loop = [1, 2] + [11, 12, 13] * 3 + [14]  # a 3-token span three times: the Python guard stops there
    speech = [5, 6, 7, 8]
    fake = _FakeCt2([(loop, -0.1, 0.01), (speech, -0.1, 0.01)]).decoder
    calls = []

    def fallback(rows):
        calls.append(rows)
        return [DecodeResult("redone", [11], -0.1, 0.01, 1.0, "loop") for _ in rows]

    results = fake.decode(torch.zeros(2, 10, 4), None, [10.0, 10.0], opts, fallback)
    assert calls == [[0]]
    assert results[0].text == "redone" and results[1].tokens == speech and results[1].stop_reason == "eot"
    assert (fake.samples, fake.python_fallbacks) == (2, 1)
    # without a fallback, the loop is cut where the Python guard would have cut it (one copy kept)
    alone = _FakeCt2([(loop, -0.1, 0.01)]).decoder.decode(torch.zeros(1, 10, 4), None, [10.0], opts)
    assert alone[0].tokens == [1, 2, 11, 12, 13] and alone[0].stop_reason == "loop"


def test_ct2_no_speech_rule_uses_the_probability_and_average_log_probability():
    opts = DecodingOptions()
    fake = _FakeCt2([([5, 6, 7], -2.0, 0.9), ([5, 6, 7], -0.2, 0.9), ([5, 6, 7], -2.0, 0.1)]).decoder
    results = fake.decode(torch.zeros(3, 10, 4), None, [5.0] * 3, opts)
    assert [r.stop_reason for r in results] == ["no_speech", "eot", "eot"]
    assert results[0].text == "" and results[0].avg_logprob == pytest.approx(-2.0 * 3 / 4)


def test_first_loop_end_finds_where_the_guard_stops():
    from hra.backbone.ct2_decoding import first_loop_end

    opts = DecodingOptions()
    assert first_loop_end([1, 2, 3, 4, 5], opts) is None
    assert first_loop_end([9] + [7] * 6, opts) == 6  # the fifth 7
    assert first_loop_end([1] + list(range(100, 110)) * 2 + [3], opts) == 21


@pytest.mark.slow
def test_without_the_ctranslate2_package_the_python_decoder_serves(monkeypatch, caplog):
    import importlib.util

    from hra.foundation import load_foundation

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ctranslate2" else real_find_spec(name, *a))
    foundation = load_foundation(decoder="ctranslate2")
    assert foundation.decoder_kind == "python" and foundation.describe()["decoder"] == {"kind": "python"}
    assert "not installed" in caplog.text


def test_load_foundation_refuses_an_unknown_decoder():
    from hra.foundation import load_foundation

    with pytest.raises(ValueError, match="unknown decoder"):
        load_foundation(decoder="onnx")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["python", "ctranslate2"])
def test_hra_decoder_setting_reaches_load_foundation(monkeypatch, tmp_path, value):
    import hra.foundation
    from app.hra_ml import HRAMLService
    from app.settings import Settings

    monkeypatch.setenv("HRA_DECODER", value)
    seen = {}
    monkeypatch.setattr(hra.foundation, "load_foundation", lambda **kwargs: seen.update(kwargs) or "foundation")
    service = HRAMLService(Settings(var_dir=tmp_path, device="cpu"))
    assert service._load_from_settings() == "foundation"
    assert seen["decoder"] == value
