"""The benchmarks' default inputs and outputs: folders of a checkout of the repository, not package data.

Every benchmark takes these as arguments too (``--corpus``, ``--real-speech``, ``--out``); the defaults are where a
checkout (``pip install -e .``) keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "corpus"  # built by ``python -m hra.corpus build`` (the foundation benchmark builds what it lacks)
RESULTS_DIR = ROOT / "benchmarks" / "results"
# Recordings of real people: FLAC files and manifest.jsonl (``file``, ``transcript``); see its README.md.
REAL_SPEECH = ROOT / "benchmarks" / "data" / "real_speech"


def real_speech_rows(folder: Path) -> list[dict]:
    """The rows of ``folder/manifest.jsonl`` (``file`` relative to ``folder``, ``transcript``), in file order."""
    manifest = Path(folder) / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: a real-speech folder holds audio files and a manifest.jsonl "
                                f"of {{'file', 'transcript'}} rows (the repository's: {REAL_SPEECH})")
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
