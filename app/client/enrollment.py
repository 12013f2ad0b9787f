"""Enrolling a folder of recordings, resumably (``hra enroll DIR --speaker NAME``).

The folder holds audio files (WAV, FLAC, OGG, MP3) and one transcripts file:

    transcripts.tsv   name<TAB>text[<TAB>split]      split: train | eval | empty (the server decides)
    metadata.csv      name|text[|normalized text]    LJSpeech style; the text column is used

``name`` is a path relative to the folder, with or without its extension (``utt01`` finds ``utt01.wav``, and
``wavs/utt01.wav`` as LJSpeech lays it out). Empty lines and lines starting with ``#`` are ignored, and so is a
first line that is a header (``name<TAB>text``).

Why a local state file: the utterance listing's ``sha256`` is of the audio as the *server* stores it (decoded,
resampled to 16 kHz mono, FLAC-encoded), which a client cannot reproduce from the file it uploaded. So each
successful upload is recorded in ``DIR/.hra-enroll.json`` (per server URL and speaker) as the sha256 of the
file's bytes -> the utterance id, written after every upload. On a re-run a file is skipped when its recorded
utterance is still in the server's listing (an erased speaker or utterance is uploaded again). A file with no
record (the state file was lost, or the process died between the server's answer and the write) is matched to a
listed utterance nobody claimed with the same transcript and the same duration (within 50 ms), so an interrupted
run does not store it twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.client.api import HRAClient
from app.client.audio import audio_duration_s
from app.client.errors import ApiError, ConfigError
from app.client.models import Utterance

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TRANSCRIPT_FILES = ("transcripts.tsv", "metadata.csv")
STATE_FILE = ".hra-enroll.json"
HEADER_NAMES = {"name", "file", "filename", "path", "audio", "id"}
SPLITS = {"train", "eval"}
SAME_DURATION_S = 0.05
# Per-file refusals: the next file may well be fine. Anything else (401, 404 speaker gone, 5xx, network) stops.
PER_FILE_STATUSES = {413, 422}


class EnrollmentError(ConfigError):
    """The folder or its transcripts file cannot be used as given."""


@dataclass(frozen=True)
class EnrollmentItem:
    name: str  # as written in the transcripts file
    path: Path
    transcript: str
    split: str | None
    sha256: str  # of the file's bytes

    def duration_s(self) -> float | None:
        return audio_duration_s(self.path)


@dataclass
class EnrollmentPlan:
    items: list[EnrollmentItem]
    missing_audio: list[str] = field(default_factory=list)  # names in the transcripts file without a file
    unlisted_audio: list[Path] = field(default_factory=list)  # audio files with no transcript (ignored)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (name, name of the same content)


def find_transcripts_file(directory: Path) -> Path:
    for name in TRANSCRIPT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise EnrollmentError(f"{directory} has no transcripts file ({' or '.join(TRANSCRIPT_FILES)}); see `hra enroll -h`")


def read_transcripts(path: Path) -> list[tuple[str, str, str | None]]:
    """(name, text, split) rows of a transcripts file; the separator follows the suffix (.csv: ``|``)."""
    separator = "|" if path.suffix.lower() == ".csv" else "\t"
    rows: list[tuple[str, str, str | None]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split(separator)]
        if not rows and fields[0].lower() in HEADER_NAMES:
            continue
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise EnrollmentError(f"{path}:{number}: expected name{separator!r}text, got {line!r}")
        split = None
        if separator == "\t" and len(fields) > 2 and fields[2]:
            split = fields[2].lower()
            if split not in SPLITS:
                raise EnrollmentError(f"{path}:{number}: split must be train or eval, got {fields[2]!r}")
        rows.append((fields[0], fields[1], split))
    return rows


def _audio_path(directory: Path, name: str) -> Path | None:
    for base in (directory, directory / "wavs"):
        candidates = [base / name] + [base / f"{name}{suffix}" for suffix in AUDIO_SUFFIXES]
        for candidate in candidates:
            if candidate.is_file() and candidate.suffix.lower() in AUDIO_SUFFIXES:
                return candidate
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def plan_enrollment(directory: str | Path, transcripts: str | Path | None = None) -> EnrollmentPlan:
    directory = Path(directory)
    if not directory.is_dir():
        raise EnrollmentError(f"{directory} is not a directory")
    rows = read_transcripts(Path(transcripts) if transcripts else find_transcripts_file(directory))
    plan = EnrollmentPlan(items=[])
    seen_names: set[str] = set()
    by_content: dict[str, str] = {}
    used: set[Path] = set()
    for name, text, split in rows:
        if name in seen_names:
            raise EnrollmentError(f"{name!r} appears twice in the transcripts file")
        seen_names.add(name)
        path = _audio_path(directory, name)
        if path is None:
            plan.missing_audio.append(name)
            continue
        used.add(path.resolve())
        digest = _sha256(path)
        if digest in by_content:  # one recording is one utterance, whatever it is called
            plan.duplicates.append((name, by_content[digest]))
            continue
        by_content[digest] = name
        plan.items.append(EnrollmentItem(name, path, text, split, digest))
    plan.unlisted_audio = sorted(
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and p.resolve() not in used
    )
    return plan


class EnrollmentState:
    """Which local files (by content sha256) are stored as which utterance, per server and speaker."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._uploads: dict[str, dict[str, dict[str, str]]] = {}
        if path.is_file():
            try:
                self._uploads = json.loads(path.read_text(encoding="utf-8"))["uploads"]
            except (ValueError, KeyError, TypeError) as exc:
                raise EnrollmentError(f"{path} is not an enrollment state file ({exc}); move it away") from exc

    @staticmethod
    def target(url: str, speaker_id: str) -> str:
        return f"{url.rstrip('/')} {speaker_id}"

    def recorded(self, target: str) -> dict[str, dict[str, str]]:
        return self._uploads.get(target, {})

    def record(self, target: str, item: EnrollmentItem, utterance_id: str) -> None:
        self._uploads.setdefault(target, {})[item.sha256] = {"utterance_id": utterance_id, "name": item.name}
        partial = self.path.with_name(self.path.name + ".partial")  # replace atomically: never a torn file
        partial.write_text(json.dumps({"version": 1, "uploads": self._uploads}, indent=1), encoding="utf-8")
        os.replace(partial, self.path)


@dataclass(frozen=True)
class Outcome:
    item: EnrollmentItem
    action: str  # "uploaded", "stored" (recorded earlier), "matched" (found on the server), "failed"
    utterance: Utterance | None = None
    error: ApiError | None = None
    note: str | None = None


@dataclass
class EnrollmentReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(o.action == action for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action == "failed"]


def _matching(item: EnrollmentItem, unclaimed: dict[str, Utterance]) -> Utterance | None:
    candidates = [u for u in unclaimed.values() if u.transcript == " ".join(item.transcript.split())]
    if not candidates:
        return None
    duration = item.duration_s()
    if duration is None:
        return None  # the transcript alone could be a second recording of the same sentence
    return next((u for u in candidates if abs(u.duration_s - duration) <= SAME_DURATION_S), None)


def enroll(
    client: HRAClient,
    speaker_id: str,
    plan: EnrollmentPlan,
    state: EnrollmentState,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> EnrollmentReport:
    """Upload what the server does not hold yet, recording each upload in ``state`` as it happens."""
    target = EnrollmentState.target(client.url, speaker_id)
    listed = {u.id: u for u in client.list_utterances(speaker_id)}
    recorded = state.recorded(target)
    claimed = {entry["utterance_id"] for entry in recorded.values()}
    unclaimed = {uid: u for uid, u in listed.items() if uid not in claimed}
    report = EnrollmentReport()

    def done(outcome: Outcome) -> None:
        report.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    for item in plan.items:
        entry = recorded.get(item.sha256)
        stored = listed.get(entry["utterance_id"]) if entry else None
        if stored is not None:
            changed = stored.transcript != " ".join(item.transcript.split())
            note = "transcript edited since upload; the stored one is kept" if changed else None
            done(Outcome(item, "stored", stored, note=note))
            continue
        match = _matching(item, unclaimed)
        if match is not None:
            del unclaimed[match.id]
            state.record(target, item, match.id)
            done(Outcome(item, "matched", match))
            continue
        try:
            utterance = client.upload_utterance(speaker_id, item.path, item.transcript, item.split)
        except ApiError as exc:
            if exc.status not in PER_FILE_STATUSES:
                raise
            done(Outcome(item, "failed", error=exc))
            continue
        state.record(target, item, utterance.id)
        done(Outcome(item, "uploaded", utterance))
    return report
