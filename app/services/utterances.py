"""Enrollment utterances: validate, normalize to 16 kHz mono FLAC, store under a server-side key, assign a split."""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import errors
from app.ml import MLService
from app.services import quotas
from app.services.audio import decode_checked
from app.services.speakers import lock_live_speaker
from app.settings import Settings
from storage.models import Speaker, Split, Utterance
from storage.objects import ObjectStore, utterance_key

STORED_SAMPLE_RATE = 16000
EVAL_ONE_IN = 4  # without a client choice, one utterance in four is held out for evaluation


def parse_split(value: str | None) -> Split | None:
    if value is None or value.strip() == "":
        return None
    try:
        return Split(value.strip().lower())
    except ValueError:
        raise errors.InvalidSplit(f"split must be 'train' or 'eval', not {value[:40]!r}") from None


def hashed_split(speaker_id: uuid.UUID, audio_sha256: str) -> Split:
    """A stable pseudo-random split, one in ``EVAL_ONE_IN`` held out.

    Hashes the speaker and the normalized audio's sha256 (not a random row id) so that the same recording
    uploaded twice lands on the same side and never leaks from train into eval.
    """
    digest = hashlib.sha256(speaker_id.bytes + bytes.fromhex(audio_sha256)).digest()
    return Split.eval if int.from_bytes(digest[:8], "big") % EVAL_ONE_IN == 0 else Split.train


def clean_transcript(transcript: str | None) -> str:
    text = " ".join((transcript or "").split())
    if not text:
        raise errors.EmptyTranscript()
    if len(text) > 10_000:
        raise errors.Unprocessable("transcript longer than 10000 characters")
    return text


def add_utterance(
    db: Session,
    store: ObjectStore,
    ml: MLService,
    settings: Settings,
    speaker: Speaker,
    audio: bytes,
    transcript: str | None,
    split: str | None,
) -> Utterance:
    """Decode, check and store one utterance (blocking: call from a worker thread). Flushes, does not commit.

    The audio object is written before the row; if the caller's commit fails it must ``store.delete(row.object_key)``.
    The row is inserted under the speaker's row lock (``lock_live_speaker``): a speaker deleted meanwhile, or being
    deleted, raises ``SpeakerNotFound`` (the object is deleted again), so no upload outlives its speaker's erasure;
    like after any failed flush, the caller's transaction is then unusable and the caller rolls it back.

    Quotas (``app.services.quotas``): checked before decoding (a tenant already at a limit is refused cheaply) and
    again, with the stored size, under the tenant's lock right before the insert (429 ``quota_exceeded``).
    """
    text = clean_transcript(transcript)
    chosen = parse_split(split)
    quotas.check_new_utterance(db, settings, speaker, lock=False)
    decoded = decode_checked(ml, audio, settings, min_seconds=settings.min_utterance_seconds)
    flac = ml.encode_flac(decoded.waveform)
    digest = hashlib.sha256(flac).hexdigest()
    utterance_id = uuid.uuid4()
    key = utterance_key(speaker.tenant_id, speaker.id, utterance_id)
    store.put(key, flac, "audio/flac")
    utterance = Utterance(
        id=utterance_id,
        speaker_id=speaker.id,
        object_key=key,
        sha256=digest,
        duration_s=float(decoded.duration_s),
        sample_rate=STORED_SAMPLE_RATE,
        original_sample_rate=decoded.original_sample_rate,
        original_channels=decoded.original_channels,
        transcript=text,
        split=chosen or hashed_split(speaker.id, digest),
        size_bytes=len(flac),
    )
    try:
        lock_live_speaker(db, speaker.id)
        quotas.check_new_utterance(db, settings, speaker, len(flac))
        db.add(utterance)
        db.flush()
    except IntegrityError as exc:  # the speaker was deleted while the audio was being processed
        store.delete(key)
        raise errors.SpeakerNotFound() from exc
    except BaseException:
        store.delete(key)
        raise
    return utterance


def list_utterances(db: Session, speaker_id: uuid.UUID, split: Split | None = None) -> list[Utterance]:
    query = select(Utterance).where(Utterance.speaker_id == speaker_id)
    if split is not None:
        query = query.where(Utterance.split == split)
    return list(db.scalars(query.order_by(Utterance.created_at, Utterance.id)))


def get_utterance(db: Session, speaker_id: uuid.UUID, utterance_id: uuid.UUID) -> Utterance:
    """The speaker's utterance (the caller looked the speaker up for its tenant); ``UtteranceNotFound`` otherwise."""
    utterance = db.scalar(select(Utterance).where(Utterance.id == utterance_id, Utterance.speaker_id == speaker_id))
    if utterance is None:
        raise errors.UtteranceNotFound()
    return utterance
