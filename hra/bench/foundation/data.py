"""The benchmark's speech: a voice's enrollment, held-out and gate utterances from the synthetic corpus, and the
recordings of real people."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch

from hra.bench.paths import real_speech_rows


@dataclass
class VoiceData:
    voice: str
    group: str
    kind: str
    train: list[tuple[torch.Tensor, str]]
    eval: list[tuple[torch.Tensor, str]]
    eval_ids: list[str]
    gate: list[tuple[torch.Tensor, str]] = field(default_factory=list)


def read_wave(path: Path) -> torch.Tensor:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != 16000:
        raise ValueError(f"{path}: {rate} Hz, expected 16000")
    return torch.from_numpy(data.mean(axis=1).copy())


def ensure_corpus(corpus: Path, voices: Sequence[str], n_train: int, n_eval: int, jobs: int) -> None:
    """Synthesize what is missing (the corpus builder is resumable and extends smaller builds)."""
    from hra.corpus import BuildOptions, build_corpus, get_voice
    from hra.corpus.build import MANIFEST, read_manifest

    rows = read_manifest(corpus / MANIFEST)
    have: dict[tuple[str, str], int] = {}
    for r in rows:
        if (corpus / str(r["path"])).is_file():
            key = (str(r["voice"]), str(r["split"]))
            have[key] = have.get(key, 0) + 1
    missing = [v for v in voices if have.get((v, "train"), 0) < n_train or have.get((v, "eval"), 0) < n_eval]
    if missing:
        print(f"building corpus for {len(missing)} voices ({n_train} train + {n_eval} eval each) in {corpus}",
              flush=True)
        build_corpus(corpus, [get_voice(v) for v in missing], BuildOptions(n_train=n_train, n_eval=n_eval, jobs=jobs),
                     progress=False)


def load_voice(corpus: Path, voice: str, n_train: int, n_eval: int, n_gate: int = 0) -> VoiceData:
    """The first ``n_train`` train utterances; the first ``n_eval`` eval utterances (held out, scored) and the
    ``n_gate`` after them (the gate's; a larger corpus build extends the eval list without changing its start)."""
    from hra.corpus import get_voice
    from hra.corpus.build import MANIFEST, read_manifest

    rows = [r for r in read_manifest(corpus / MANIFEST) if r["voice"] == voice]
    train = sorted((r for r in rows if r["split"] == "train"), key=lambda r: str(r["id"]))[:n_train]
    held = sorted((r for r in rows if r["split"] == "eval"), key=lambda r: str(r["id"]))[:n_eval + n_gate]
    if len(train) < n_train or len(held) < n_eval + n_gate:
        raise ValueError(f"{voice}: corpus has {len(train)} train / {len(held)} eval, "
                         f"needs {n_train} / {n_eval + n_gate}")
    info = get_voice(voice)

    def waves(selected: list[dict]) -> list[tuple[torch.Tensor, str]]:
        return [(read_wave(corpus / str(r["path"])), str(r["text"])) for r in selected]

    return VoiceData(
        voice=voice, group=info.group, kind=info.kind, train=waves(train), eval=waves(held[:n_eval]),
        eval_ids=[str(r["id"]) for r in held[:n_eval]], gate=waves(held[n_eval:]),
    )


@dataclass
class RealSpeech:
    files: list[str]
    waves: list[torch.Tensor]
    references: list[str]


def load_real_speech(folder: Path) -> RealSpeech:
    """The recordings of a real-speech folder (``hra.bench.paths.REAL_SPEECH`` by default), in manifest order."""
    rows = real_speech_rows(folder)
    return RealSpeech(files=[r["file"] for r in rows], waves=[read_wave(Path(folder) / r["file"]) for r in rows],
                      references=[r["transcript"] for r in rows])
