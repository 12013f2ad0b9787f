"""Guarded decoding, greedy and beam search: agreement with faster-whisper on real speech, loop/length/no-speech
guards, batch invariance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hra.audio import decode_audio
from hra.backbone.decoding_rules import DecodingOptions, compression_ratio, repeated_tail
from hra.backbone.whisper import BASE_SERVING_CONTEXT, BackboneOptions, load_whisper_tiny_en, wheel_model_dir
from hra.text import corpus_wer, normalize

torch.set_num_threads(1)
FIXTURES = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "real_speech"  # recordings of real people
MANIFEST = [json.loads(line) for line in (FIXTURES / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def served():
    """The base model as served: Whisper's 30-s window (what faster-whisper does), beam search."""
    return load_whisper_tiny_en(options=BackboneOptions(context=BASE_SERVING_CONTEXT))


@pytest.fixture(scope="module")
def backbone(served):
    """The same, greedy (the decoding that faster-whisper's beam_size=1 reproduces token for token)."""
    return served.with_options(BackboneOptions(context=BASE_SERVING_CONTEXT, decoding=DecodingOptions(beam_size=1)))


@pytest.fixture(scope="module")
def waves():
    return [decode_audio((FIXTURES / r["file"]).read_bytes()).waveform for r in MANIFEST]


def _decode_all(backbone, waves, batch_size: int = 8):
    results = []
    for i in range(0, len(waves), batch_size):
        chunk = waves[i : i + batch_size]
        batch = backbone.prepare(chunk)
        with torch.inference_mode():
            enc = backbone.encode(batch)
        results += backbone.decode_detailed(enc, [w.shape[0] / 16000 for w in chunk], batch.frames)
    return results


@pytest.fixture(scope="module")
def ours(backbone, waves):
    return _decode_all(backbone, waves)


@pytest.fixture(scope="module")
def ours_beam(served, waves):
    return _decode_all(served, waves)


def _faster_whisper(compute_type: str):
    fw = pytest.importorskip("faster_whisper")
    return fw.WhisperModel(str(wheel_model_dir()), device="cpu", compute_type=compute_type, cpu_threads=1)


def _fw_greedy(model, wav: torch.Tensor, beam_size: int = 1) -> tuple[list[int], str]:
    segments, _ = model.transcribe(
        wav.numpy(), beam_size=beam_size, temperature=0.0, without_timestamps=True, condition_on_previous_text=False
    )
    segments = list(segments)
    return [t for s in segments for t in s.tokens], " ".join(s.text.strip() for s in segments)


def test_greedy_tokens_equal_faster_whisper_float32_greedy_on_real_speech(ours, waves):
    model = _faster_whisper("float32")
    mismatches = []
    for row, wav, result in zip(MANIFEST, waves, ours):
        tokens, text = _fw_greedy(model, wav)
        if tokens != result.tokens:
            mismatches.append((row["file"], text, result.text))
    assert not mismatches, mismatches


def test_wer_within_003_of_faster_whisper_int8_greedy_on_real_speech(ours, waves):
    model = _faster_whisper("int8")
    refs = [r["transcript"] for r in MANIFEST]
    theirs = [_fw_greedy(model, w)[1] for w in waves]
    ours_wer, fw_wer = corpus_wer(refs, [r.text for r in ours]), corpus_wer(refs, theirs)
    assert ours_wer <= fw_wer + 0.03, (ours_wer, fw_wer)
    assert ours_wer < 0.15


def test_beam_search_matches_faster_whisper_float32_beam5_on_real_speech(ours_beam, waves):
    """Same tokens on most files; where CTranslate2's beam picks another spelling ("8" / "eight"), the
    normalized text is the same."""
    model = _faster_whisper("float32")
    same_tokens, differ = 0, []
    for row, wav, result in zip(MANIFEST, waves, ours_beam):
        tokens, text = _fw_greedy(model, wav, beam_size=5)
        if tokens == result.tokens:
            same_tokens += 1
        elif normalize(text) != normalize(result.text):
            differ.append((row["file"], text, result.text))
    assert same_tokens >= 12 and not differ, (same_tokens, differ)


def test_beam_wer_within_003_of_faster_whisper_int8_beam5_on_real_speech(ours_beam, waves):
    model = _faster_whisper("int8")
    refs = [r["transcript"] for r in MANIFEST]
    theirs = [_fw_greedy(model, w, beam_size=5)[1] for w in waves]
    ours_wer, fw_wer = corpus_wer(refs, [r.text for r in ours_beam]), corpus_wer(refs, theirs)
    assert ours_wer <= fw_wer + 0.03, (ours_wer, fw_wer)


def test_batched_beam_search_equals_one_at_a_time(served, waves, ours_beam):
    for i in (0, 5, 10):
        assert _decode_all(served, [waves[i]])[0].tokens == ours_beam[i].tokens


def test_beam_size_and_row_bound_must_be_positive():
    with pytest.raises(ValueError, match="beam_size"):
        DecodingOptions(beam_size=0)
    with pytest.raises(ValueError, match="max_beam_rows"):
        DecodingOptions(max_beam_rows=0)


def test_beam_search_in_chunks_of_one_sample_equals_one_pass(served, waves, ours_beam):
    """The row bound splits a batch into chunks of samples; the hypotheses do not depend on it."""
    one_row = served.with_options(
        BackboneOptions(context=BASE_SERVING_CONTEXT, decoding=DecodingOptions(max_beam_rows=1))
    )
    assert [r.tokens for r in _decode_all(one_row, waves[:8])] == [r.tokens for r in ours_beam[:8]]


def test_batched_decode_equals_one_at_a_time_full_context(backbone, waves, ours):
    for i in (0, 5, 10):
        batch = backbone.prepare([waves[i]])
        with torch.inference_mode():
            enc = backbone.encode(batch)
        assert backbone.decode_detailed(enc, [waves[i].shape[0] / 16000])[0].tokens == ours[i].tokens


def test_silence_and_noise_give_no_text(backbone):
    g = torch.Generator().manual_seed(0)
    audio = [torch.zeros(16000 * 2), torch.randn(16000 * 2, generator=g) * 0.01]
    assert backbone.transcribe(audio) == ["", ""]


def test_length_bound_from_duration():
    opts = DecodingOptions()
    assert opts.token_limit(1.0) == 17 and opts.token_limit(100.0) == 224
    assert DecodingOptions(guards=False).token_limit(1.0) == 224


def test_length_bound_stops_a_long_transcript_on_short_audio(backbone, waves):
    row = next(i for i, r in enumerate(MANIFEST) if r["file"] == "librivox_0870.flac")
    tight = backbone.with_options(BackboneOptions(decoding=DecodingOptions(max_tokens_per_second=0.5, extra_tokens=0)))
    batch = tight.prepare([waves[row]])
    with torch.inference_mode():
        result = tight.decode_detailed(tight.encode(batch), [waves[row].shape[0] / 16000])[0]
    assert result.stop_reason == "length" and len(result.tokens) == 4


def test_repeated_tail_cuts_loops_and_keeps_one_copy():
    opts = DecodingOptions()
    phrase = [11, 12, 13, 14]
    assert repeated_tail([1, 2] + phrase * 3, opts) == 8
    assert repeated_tail([1, 2] + phrase * 2, opts) == 0  # twice is speech, not a loop
    assert repeated_tail([5] + [7] * 5, opts) == 4
    assert repeated_tail([5] + [7] * 4, opts) == 0
    assert repeated_tail([1, 2, 3, 4, 5, 6], opts) == 0
    sentence = list(range(100, 110))  # a repeated sentence is a loop at its second copy
    assert repeated_tail([1] + sentence * 2, opts) == 10
    assert repeated_tail([1] + sentence + sentence[:9], opts) == 0


def test_compression_ratio_flags_repetition():
    assert compression_ratio("the cat sat on the mat") < 2.4
    assert compression_ratio("thank you for watching. " * 10) > 2.4
    assert compression_ratio("") == 0.0


@pytest.mark.parametrize("beam_size", [1, 5])
def test_loop_guard_on_a_looping_decoder(backbone, monkeypatch, beam_size):
    """Force a loop by biasing the decoder toward a 3-token cycle; the guard must cut it to one copy."""
    bb = backbone.with_options(BackboneOptions(decoding=DecodingOptions(beam_size=beam_size)))
    ids = bb.token_ids("go go")  # ' go', ' go'
    cycle = bb.token_ids("yes no maybe")
    decoder = bb._decoder
    original = decoder.decoder.forward

    def biased(tokens, cross_kv, cross_mask=None, cache=None, hook=None):
        logits, new_cache = original(tokens, cross_kv, cross_mask, cache, hook=hook)
        logits = logits.clone()
        for row in range(tokens.shape[0]):  # each hypothesis is pushed along the cycle from its own last token
            last = int(tokens[row, -1])
            nxt = cycle[(cycle.index(last) + 1) % 3] if last in cycle else cycle[0]
            logits[row, -1, nxt] += 1000.0
        return logits, new_cache

    monkeypatch.setattr(decoder.decoder, "forward", biased)
    wav = torch.zeros(16000 * 10)
    batch = bb.prepare([wav])
    with torch.inference_mode():
        result = bb.decode_detailed(bb.encode(batch), [10.0], batch.frames)[0]
    assert result.stop_reason == "loop"
    assert result.tokens == cycle
    assert ids  # tokenizer sanity


def test_result_identity_keeps_what_changes_the_text_and_greedy_keys_stable():
    greedy, beam = DecodingOptions(beam_size=1), DecodingOptions(beam_size=5)
    assert greedy.result_identity() != beam.result_identity()
    assert "beam_size=5" in beam.result_identity() and "beam_size" not in greedy.result_identity()
    # the row bound only bounds memory: the same measurement
    assert DecodingOptions(max_beam_rows=1).result_identity() == beam.result_identity()
    assert DecodingOptions(beam_size=1, guards=False).result_identity() != greedy.result_identity()
    assert greedy.result_identity().startswith("DecodingOptions(guards=True, max_new_tokens=224,")
