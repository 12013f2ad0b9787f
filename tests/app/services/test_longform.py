"""Long-form chunking (app.services.longform) and the transcript formats (app.services.transcript_formats)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from app.services import longform
from app.services import transcript_formats as fmt
from app.services.longform import Chunk, Segment
from app.settings import Settings

SR = 16000
REPO = Path(__file__).resolve().parents[3]


def settings(**overrides) -> Settings:
    values = {"var_dir": Path("/tmp/unused"), "vad": "energy", "longform_chunk_seconds": 10.0, "longform_max_merge_gap_seconds": 1.0}
    values.update(overrides)
    return Settings(_env_file=None, **values)


def signal(spans: list[tuple[float, float]], total: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Noise floor plus 0.3-amplitude tones over ``spans`` (seconds)."""
    rng = np.random.default_rng(seed)
    out = (noise * rng.standard_normal(int(total * SR))).astype(np.float32)
    for start, end in spans:
        t = np.arange(int(start * SR), int(end * SR))
        out[t] += (0.3 * np.sin(2 * np.pi * 220 * t / SR)).astype(np.float32)
    return out


class TestEnergyVad:
    @pytest.mark.parametrize("noise", [0.0, 0.003])
    def test_finds_the_spans_with_padding(self, noise):
        spans = [(1.0, 3.0), (5.0, 5.6), (8.0, 12.0)]
        regions = longform.energy_speech_regions(signal(spans, 14.0, noise))
        assert len(regions) == 3
        for (s, e), (start, end) in zip(spans, regions, strict=True):
            assert s - 0.25 <= start / SR <= s and e <= end / SR <= e + 0.25

    def test_short_pauses_do_not_split_and_blips_are_dropped(self):
        regions = longform.energy_speech_regions(signal([(1.0, 2.0), (2.2, 3.0), (5.0, 5.1)], 6.0))
        assert len(regions) == 1 and regions[0][1] / SR <= 3.25

    def test_touching_pads_split_the_pause(self):
        regions = longform.energy_speech_regions(signal([(1.0, 2.0), (2.35, 3.0)], 4.0))
        assert len(regions) == 2 and regions[0][1] == regions[1][0]

    def test_silence_has_no_regions(self):
        assert longform.energy_speech_regions(np.zeros(5 * SR, dtype=np.float32)) == []


class TestChunks:
    def test_short_audio_is_one_chunk_without_vad(self):
        assert longform.plan_chunks(np.zeros(29 * SR, dtype=np.float32), settings()) == [Chunk(0, 29 * SR)]

    def test_regions_merge_up_to_the_span_across_short_pauses(self):
        spans = [(1.0, 4.0), (4.6, 8.0), (8.5, 12.0), (15.0, 17.0), (17.5, 19.0)]
        chunks = longform.plan_chunks(signal(spans, 40.0), settings())
        seconds = [(c.start / SR, c.end / SR) for c in chunks]
        assert len(chunks) == 3  # [1-8], [8.5-12] (10-s span), [15-19] (after a 3-s pause)
        assert seconds[0][0] == pytest.approx(0.8, abs=0.05) and seconds[0][1] == pytest.approx(8.2, abs=0.05)
        assert all(c.seconds <= 10.0 for c in chunks)

    def test_a_long_region_is_cut_at_its_quietest_frame_within_the_span(self):
        audio = signal([(0.5, 35.0)], 40.0)
        audio[int(8.0 * SR) : int(8.1 * SR)] *= 0.01  # a dip (100 ms) the region goes through
        chunks = longform.plan_chunks(audio, settings())
        assert all(c.seconds <= 10.0 for c in chunks) and len(chunks) == 4
        assert 8.0 <= chunks[1].start / SR <= 8.1  # in the dip; then as late as the span allows
        assert chunks[2].start / SR == pytest.approx(18.0, abs=0.05)
        assert all(a.end == b.start for a, b in itertools.pairwise(chunks))

    def test_split_long_never_exceeds_the_span(self):
        db = np.zeros(100 * SR // longform.FRAME + 1)
        pieces = longform.split_long(0, 95 * SR, 30 * SR, db)
        assert pieces[0][0] == 0 and pieces[-1][1] == 95 * SR and all(e - s <= 30 * SR for s, e in pieces)

    def test_merge_keeps_order_and_limits(self):
        merged = longform.merge_regions([(0, 10), (15, 20), (40, 45), (46, 200)], max_span=100, max_gap=5)
        assert merged == [Chunk(0, 20), Chunk(40, 45), Chunk(46, 200)]


class TestSileroVad:
    def test_splits_real_speech_at_the_pauses_and_keeps_torch_threads(self):
        import torch

        from hra.audio import decode_audio

        folder = REPO / "benchmarks" / "data" / "real_speech"
        if not folder.exists():
            folder = REPO / "tests" / "fixtures" / "real_speech"
        rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()][:4]
        pause = np.zeros(int(1.5 * SR), dtype=np.float32)
        parts, truth, t = [pause], [], 1.5
        for row in rows:
            wave = decode_audio((folder / row["file"]).read_bytes()).waveform.numpy()
            parts += [wave, pause]
            truth.append((t, t + len(wave) / SR))
            t += len(wave) / SR + 1.5
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            regions = longform.speech_regions(np.concatenate(parts), "silero", 10.0)
            assert torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(threads)
        assert len(regions) == len(truth)
        for (start, end), (s, e) in zip(regions, truth, strict=True):
            assert s - 0.3 <= start / SR and end / SR <= e + 0.3


class TestFormats:
    SEGMENTS = [Segment(0, 0.79, 2.72, "hello there"), Segment(1, 3661.5, 3663.0, "an hour later")]

    def test_timestamps(self):
        assert fmt.timestamp(3661.5, ",") == "01:01:01,500" and fmt.timestamp(0.0006, ".") == "00:00:00.001"

    def test_srt_and_vtt(self):
        assert fmt.srt(self.SEGMENTS) == (
            "1\n00:00:00,790 --> 00:00:02,720\nhello there\n\n2\n01:01:01,500 --> 01:01:03,000\nan hour later\n\n"
        )
        assert fmt.vtt(self.SEGMENTS) == (
            "WEBVTT\n\n00:00:00.790 --> 00:00:02.720\nhello there\n\n01:01:01.500 --> 01:01:03.000\nan hour later\n\n"
        )

    def test_verbose_json_follows_openais_shape(self):
        body = fmt.verbose_json_body(self.SEGMENTS, 3700.0)
        assert body["text"] == "hello there an hour later" and body["duration"] == 3700.0
        assert set(body["segments"][0]) == {
            "id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
            "no_speech_prob",
        }
        assert body["segments"][1]["seek"] == 366150

    def test_sse_puts_each_line_on_a_data_line(self):
        assert fmt.sse("1\n00:00 --> 00:01\nhi") == "data: 1\ndata: 00:00 --> 00:01\ndata: hi\n\n"
