"""Small audio fixtures committed under tests/fixtures/ (rebuilt by ``python -m hra.corpus fixtures``).

- ``speaker_<name>/``: one new-speaker voice that the base model fails, ``n_train`` + ``n_eval`` short utterances
  (16 kHz mono FLAC) and ``manifest.jsonl`` with ``file, text, split`` (paths relative to the folder);
- ``formats/``: the same short phrase as 44.1 kHz stereo WAV, OGG Vorbis and MP3 (for upload tests), and
  ``garbage.bin`` (seeded random bytes that no decoder accepts).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from hra.corpus.build import BuildOptions, build_corpus, read_manifest, MANIFEST
from hra.corpus.synth import SynthesisError, engine_command
from hra.corpus.voices import Voice, get_voice

FORMAT_PHRASE = "Testing one two three."
FORMAT_VOICE = "espeak-en-us"


def make_speaker_fixture(
    voice: Voice, out_dir: Path, n_train: int = 60, n_eval: int = 24, min_words: int = 5, max_words: int = 8,
    max_seconds: float = 3.8, jobs: int = 2,
) -> list[dict[str, str]]:
    """Synthesize a short-sentence speaker fixture into ``out_dir`` (replacing what was there)."""
    options = BuildOptions(n_train=n_train, n_eval=n_eval, min_words=min_words, max_words=max_words,
                           max_est_seconds=max_seconds, jobs=jobs)
    with tempfile.TemporaryDirectory(prefix="hra-fixture-") as tmp:
        build_corpus(Path(tmp), [voice], options, progress=False)
        rows = read_manifest(Path(tmp) / MANIFEST)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        entries = []
        for row in rows:
            name = f"{row['split']}-{int(str(row['id']).rsplit('-', 1)[1]):03d}.flac"
            shutil.copyfile(Path(tmp) / str(row["path"]), out_dir / name)
            entries.append({"file": name, "text": str(row["text"]), "split": str(row["split"]),
                            "voice": voice.name, "duration_s": row["duration_s"]})
    (out_dir / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return entries


def _sox(*args: str) -> None:
    proc = subprocess.run(["sox", "-R", "-V1", *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise SynthesisError(f"sox {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")


def make_format_fixtures(out_dir: Path, seed: int = 1234) -> list[Path]:
    """WAV (44.1 kHz stereo 16-bit), OGG and MP3 of a ~1 s phrase, plus ``garbage.bin``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    voice = get_voice(FORMAT_VOICE)
    with tempfile.TemporaryDirectory(prefix="hra-formats-") as tmp:
        text_file, raw = Path(tmp) / "text.txt", Path(tmp) / "raw.wav"
        text_file.write_text(FORMAT_PHRASE + "\n", encoding="utf-8")
        proc = subprocess.run(engine_command(voice, text_file, raw), capture_output=True, check=False)
        if proc.returncode != 0:
            raise SynthesisError(proc.stderr.decode(errors="replace"))
        trimmed = Path(tmp) / "trimmed.wav"
        # drop leading/trailing silence so that the clip lasts about one second
        _sox(str(raw), str(trimmed), "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%",
             "reverse", "gain", "-n", "-3")
        paths = [out_dir / "speech_44k_stereo.wav", out_dir / "speech.ogg", out_dir / "speech.mp3"]
        _sox(str(trimmed), "-r", "44100", "-c", "2", "-b", "16", str(paths[0]))
        _sox(str(trimmed), "-r", "22050", "-c", "1", "-C", "0", str(paths[1]))
        _sox(str(trimmed), "-r", "22050", "-c", "1", "-C", "48", str(paths[2]))
    garbage = out_dir / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return [*paths, garbage]
