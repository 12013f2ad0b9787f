"""Build a synthetic corpus: a deterministic plan, parallel synthesis, resumable, with a JSONL manifest.

Layout of a corpus directory::

    DIR/manifest.jsonl                 one JSON object per utterance, sorted by voice (catalog order), split, index
    DIR/<voice>/<voice>-<split>-<NNNN>.flac

Manifest fields: ``id, voice, group, kind, split, path`` (relative to DIR), ``text, duration_s, engine, licence``,
plus ``fitted_tempo``/``padded`` when the length had to be adjusted. Re-running a build skips every utterance whose
file is already present and valid, so an interrupted build resumes, and a larger build extends a smaller one
(utterance ``<voice>-train-0007`` reads the same sentence whatever the size of the build).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from hra.corpus.synth import SAMPLE_RATE, SynthesisResult, estimate_seconds, is_valid_flac, synthesize
from hra.corpus.text import SENTENCE_LICENCE, Sentence, Split, assign_sentences, load_sentences
from hra.corpus.voices import VOICES, Voice, get_voice

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class BuildOptions:
    """What to build. ``n_train``/``n_eval`` utterances per voice; sentences of ``min_words``..``max_words`` words
    whose estimated duration for the voice is at most ``max_est_seconds``; ``jobs`` synthesis processes."""

    n_train: int
    n_eval: int
    min_words: int = 4
    max_words: int = 20
    max_est_seconds: float = 8.5
    jobs: int = 2

    def __post_init__(self) -> None:
        if self.n_train < 0 or self.n_eval < 0:
            raise ValueError("utterance counts must be >= 0")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError("need 1 <= min_words <= max_words")
        if self.jobs < 1:
            raise ValueError("jobs must be >= 1")

    @classmethod
    def per_voice(cls, n: int, eval_fraction: float = 0.3, **kw: object) -> BuildOptions:
        n_eval = round(n * eval_fraction)
        return cls(n_train=n - n_eval, n_eval=n_eval, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PlannedUtterance:
    id: str
    voice: str
    split: Split
    index: int
    text: str

    @property
    def path(self) -> str:
        return f"{self.voice}/{self.id}.flac"


@dataclass(frozen=True)
class BuildReport:
    planned: int
    synthesized: int
    skipped: int
    manifest: Path


def plan_voice(
    voice: Voice, options: BuildOptions, sentences: Sequence[Sentence] | None = None
) -> list[PlannedUtterance]:
    """The utterances of one voice: train then eval, each read in the voice's seeded order."""
    pool = [
        s for s in (sentences if sentences is not None else load_sentences())
        if estimate_seconds(voice, s.text) <= options.max_est_seconds
    ]
    plan: list[PlannedUtterance] = []
    split: Split
    for split, count in (("train", options.n_train), ("eval", options.n_eval)):
        chosen = assign_sentences(voice.seed, split, count, pool, options.min_words, options.max_words)
        plan += [
            PlannedUtterance(f"{voice.name}-{split}-{i:04d}", voice.name, split, i, s.text)
            for i, s in enumerate(chosen)
        ]
    return plan


def plan_corpus(voices: Iterable[Voice], options: BuildOptions) -> list[PlannedUtterance]:
    sentences = load_sentences()
    return [u for v in voices for u in plan_voice(v, options, sentences)]


def manifest_row(u: PlannedUtterance, duration_s: float, result: SynthesisResult | None = None) -> dict[str, object]:
    voice = get_voice(u.voice)
    row: dict[str, object] = {
        "id": u.id, "voice": u.voice, "group": voice.group, "kind": voice.kind, "split": u.split, "path": u.path,
        "text": u.text, "duration_s": round(duration_s, 3), "engine": voice.engine,
        "licence": f"text: {SENTENCE_LICENCE}; audio: synthesized with {voice.licence}",
    }
    if result is not None and result.fitted_tempo is not None:
        row["fitted_tempo"] = result.fitted_tempo
    if result is not None and result.padded:
        row["padded"] = True
    return row


def _synthesize_task(args: tuple[PlannedUtterance, str]) -> dict[str, object]:
    u, out_dir = args
    voice = get_voice(u.voice)
    result = synthesize(voice, u.text, u.id, Path(out_dir) / u.path)
    return manifest_row(u, result.duration_s, result)


def read_manifest(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_manifest(path: Path, rows: Iterable[dict[str, object]]) -> None:
    order = {v.name: i for i, v in enumerate(VOICES)}
    split_order = {"train": 0, "eval": 1}
    ordered = sorted(rows, key=lambda r: (order.get(str(r["voice"]), len(order)), str(r["voice"]),
                                          split_order.get(str(r["split"]), 2), str(r["id"])))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered), encoding="utf-8")
    os.replace(tmp, path)


def build_corpus(
    out_dir: Path,
    voices: Sequence[Voice],
    options: BuildOptions,
    progress: bool = True,
    on_row: Callable[[dict[str, object]], None] | None = None,
) -> BuildReport:
    """Synthesize what ``options`` asks for ``voices`` into ``out_dir`` and merge the manifest.

    Rows already in the manifest for other utterances are kept; rows of this plan are rewritten from the files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST
    rows = {str(r["id"]): r for r in read_manifest(manifest_path)}
    plan = plan_corpus(voices, options)

    todo: list[PlannedUtterance] = []
    for u in plan:
        path = out_dir / u.path
        previous = rows.get(u.id)
        stale = previous is not None and previous.get("text") != u.text  # the sentence list changed
        if is_valid_flac(path) and not stale:
            if previous is None:  # synthesized, but the run stopped before writing the manifest
                rows[u.id] = manifest_row(u, sf.info(path).frames / SAMPLE_RATE)
        else:
            todo.append(u)

    bar = tqdm(total=len(todo), desc="synthesizing", unit="utt", disable=not progress or not todo)
    try:
        tasks = [(u, str(out_dir)) for u in todo]
        if options.jobs == 1 or len(todo) <= 1:
            results: Iterable[dict[str, object]] = map(_synthesize_task, tasks)
            _consume(results, rows, bar, on_row, manifest_path)
        else:
            with multiprocessing.get_context("spawn").Pool(options.jobs) as pool:
                _consume(pool.imap_unordered(_synthesize_task, tasks, chunksize=4), rows, bar, on_row,
                         manifest_path)
    finally:
        bar.close()
        _write_manifest(manifest_path, rows.values())
    return BuildReport(planned=len(plan), synthesized=len(todo), skipped=len(plan) - len(todo),
                       manifest=manifest_path)


def _consume(
    results: Iterable[dict[str, object]],
    rows: dict[str, dict[str, object]],
    bar: tqdm,
    on_row: Callable[[dict[str, object]], None] | None,
    manifest_path: Path,
) -> None:
    for n, row in enumerate(results, 1):
        rows[str(row["id"])] = row
        bar.update(1)
        if on_row is not None:
            on_row(row)
        if n % 500 == 0:  # a long build keeps a usable manifest as it goes
            _write_manifest(manifest_path, rows.values())
