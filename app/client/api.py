"""``HRAClient``: the HTTP API's verbs as typed Python calls (httpx, synchronous).

    with HRAClient.from_config(resolve_config()) as hra:
        speaker = hra.ensure_speaker("ana")
        hra.upload_utterance(speaker.id, "utt1.wav", "the text")
        job = hra.wait_for_job(hra.start_adaptation(speaker.id).id, on_update=print)

Every error status becomes an ``ApiError`` subclass (``app.client.errors``); a server that cannot be reached is a
``TransportError``. Nothing is retried automatically except polling in ``wait_for_job``: an upload retried blindly
could store an utterance twice.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import httpx

import app.client.errors as errors  # noqa: PLR0402 - the module: importing the package would be a circle
from app.client.config import ClientConfig
from app.client.models import Head, Job, Speaker, Transcription, Utterance

AudioInput = str | Path | bytes
PAGE_SIZE = 500  # the API's largest page of speakers
# While waiting for a job, this many failed polls in a row (server restarting, network blip) are tolerated.
WAIT_TOLERATED_FAILURES = 10


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _audio_part(audio: AudioInput, filename: str | None) -> tuple[str, bytes]:
    if isinstance(audio, bytes):
        return filename or "audio.wav", audio
    path = Path(audio)
    return filename or path.name, path.read_bytes()


class HRAClient:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "hra-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: ClientConfig) -> HRAClient:
        return cls(config.url, config.api_key, timeout_s=config.timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- plumbing -------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.TransportError(f"{method} {self.url}{path}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise errors.ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # ---- service --------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``/readyz``: whether the server's database, object store and broker answer (no key needed)."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError as exc:
            raise errors.TransportError(f"GET {self.url}/readyz: {exc or type(exc).__name__}") from exc
        if response.status_code not in (200, 503):  # 503 carries the failing checks: report them, not raise
            raise errors.ApiError.from_response(response)
        return response.json()

    # ---- speakers -------------------------------------------------------------------------------------------

    def create_speaker(self, external_id: str | None = None, display_name: str | None = None) -> Speaker:
        body = {"external_id": external_id, "display_name": display_name}
        return Speaker.model_validate(self._json("POST", "/v1/speakers", json=body))

    def iter_speakers(self) -> Iterator[Speaker]:
        offset = 0
        while True:
            page = self._json("GET", "/v1/speakers", params={"limit": PAGE_SIZE, "offset": offset})["items"]
            yield from (Speaker.model_validate(item) for item in page)
            if len(page) < PAGE_SIZE:
                return
            offset += len(page)

    def list_speakers(self) -> list[Speaker]:
        return list(self.iter_speakers())

    def get_speaker(self, speaker_id: str) -> Speaker:
        return Speaker.model_validate(self._json("GET", f"/v1/speakers/{speaker_id}"))

    def find_speaker(self, external_id: str) -> Speaker | None:
        """The speaker with this ``external_id``, or None (the API has no lookup by it: this lists them)."""
        return next((s for s in self.iter_speakers() if s.external_id == external_id), None)

    def resolve_speaker(self, ref: str) -> Speaker:
        """A speaker by id or by external_id; ``NotFound`` (code ``speaker_not_found``) when neither matches."""
        if _is_uuid(ref):
            try:
                return self.get_speaker(ref)
            except errors.NotFound:
                pass  # an external_id may look like a UUID too
        speaker = self.find_speaker(ref)
        if speaker is None:
            raise errors.NotFound(404, "speaker_not_found", f"no speaker with id or external_id {ref!r}")
        return speaker

    def ensure_speaker(self, external_id: str, display_name: str | None = None) -> tuple[Speaker, bool]:
        """The speaker with ``external_id``, created if missing; and whether this call created it."""
        speaker = self.find_speaker(external_id)
        if speaker is not None:
            return speaker, False
        try:
            return self.create_speaker(external_id, display_name or external_id), True
        except errors.Conflict as exc:  # another client created it between our lookup and our POST
            if exc.code != "speaker_exists" or (speaker := self.find_speaker(external_id)) is None:
                raise
            return speaker, False

    def delete_speaker(self, speaker_id: str) -> None:
        """Erase the speaker with its audio, heads, jobs and reports."""
        self._request("DELETE", f"/v1/speakers/{speaker_id}")

    # ---- utterances -----------------------------------------------------------------------------------------

    def list_utterances(self, speaker_id: str) -> list[Utterance]:
        items = self._json("GET", f"/v1/speakers/{speaker_id}/utterances")["items"]
        return [Utterance.model_validate(item) for item in items]

    def upload_utterance(
        self,
        speaker_id: str,
        audio: AudioInput,
        transcript: str,
        split: str | None = None,
        filename: str | None = None,
    ) -> Utterance:
        """Store one recording and what is said in it. ``split``: "train", "eval" or None (the server holds
        out one in four, stably)."""
        data: dict[str, str] = {"transcript": transcript}
        if split:
            data["split"] = split
        files = {"audio": _audio_part(audio, filename)}
        body = self._json("POST", f"/v1/speakers/{speaker_id}/utterances", data=data, files=files)
        return Utterance.model_validate(body)

    # ---- adaptation jobs ------------------------------------------------------------------------------------

    def start_adaptation(
        self,
        speaker_id: str,
        head_type: str = "linear",
        max_train_seconds: float | None = None,
        max_epochs: int | None = None,
    ) -> Job:
        body: dict[str, Any] = {"head_type": head_type}
        if max_train_seconds is not None:
            body["max_train_seconds"] = max_train_seconds
        if max_epochs is not None:
            body["max_epochs"] = max_epochs
        return Job.model_validate(self._json("POST", f"/v1/speakers/{speaker_id}/adaptations", json=body))

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel_job(self, job_id: str) -> Job:
        return Job.model_validate(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def get_job_report(self, job_id: str) -> dict[str, Any]:
        """Per-utterance hypotheses of base, in-service and candidate (``NotFound`` before evaluation)."""
        return self._json("GET", f"/v1/jobs/{job_id}/report")

    def wait_for_job(
        self,
        job_id: str,
        on_update: Callable[[Job], None] | None = None,
        poll_interval_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> Job:
        """Poll until the job is promoted, rejected, failed or cancelled, and return it.

        ``on_update(job)`` is called after every poll (also the last), so a progress display can refresh.
        Up to ``WAIT_TOLERATED_FAILURES`` failed polls in a row (unreachable server, 5xx) are waited out;
        ``JobWaitTimeout`` after ``timeout_s``; the job itself is never cancelled by giving up."""
        started = time.monotonic()
        failures = 0
        last_state = "unknown"
        while True:
            try:
                job = self.get_job(job_id)
                failures = 0
            except (errors.TransportError, errors.ServerError):
                failures += 1
                if failures > WAIT_TOLERATED_FAILURES:
                    raise
                job = None
            if job is not None:
                last_state = job.state
                if on_update is not None:
                    on_update(job)
                if job.is_finished:
                    return job
            waited = time.monotonic() - started
            if timeout_s is not None and waited >= timeout_s:
                raise errors.JobWaitTimeout(job_id, last_state, waited)
            time.sleep(poll_interval_s)

    # ---- heads ----------------------------------------------------------------------------------------------

    def list_heads(self, speaker_id: str) -> list[Head]:
        """Every head version of the speaker, oldest first, with its status and evaluation."""
        items = self._json("GET", f"/v1/speakers/{speaker_id}/heads")["items"]
        return [Head.model_validate(item) for item in items]

    def get_head(self, head_id: str) -> Head:
        return Head.model_validate(self._json("GET", f"/v1/heads/{head_id}"))

    def promote_head(self, head_id: str, reason: str) -> Head:
        """Put this version in service (roll back to a retired one, or override the gate); recorded with ``reason``."""
        return Head.model_validate(self._json("POST", f"/v1/heads/{head_id}/promote", json={"reason": reason})["head"])

    def retire_head(self, head_id: str, reason: str) -> Head:
        """Take the version in service out of service (the speaker falls back to the base model)."""
        return Head.model_validate(self._json("POST", f"/v1/heads/{head_id}/retire", json={"reason": reason})["head"])

    def download_head(self, head_id: str, destination: str | Path) -> Path:
        """Save the head's safetensors file at ``destination`` (a directory, or a path ending in "/": under the
        server's file name).

        Streams to a temporary file beside the target and renames it only once its sha256 matches the one the
        server announced, so an interrupted or corrupt download never leaves a file that looks complete."""
        # "heads/" names a directory even before it exists (Path() drops the trailing slash, so look first).
        as_directory = str(destination).endswith(("/", os.sep)) or Path(destination).is_dir()
        destination = Path(destination)
        if as_directory:
            destination.mkdir(parents=True, exist_ok=True)
        path = f"/v1/heads/{head_id}/artifact"
        try:
            with self._http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise errors.ApiError.from_response(response)
                target = destination / _attachment_name(response, head_id) if as_directory else destination
                return _save_verified(response, target)
        except httpx.TransportError as exc:
            raise errors.TransportError(f"GET {self.url}{path}: {exc or type(exc).__name__}") from exc

    # ---- transcription --------------------------------------------------------------------------------------

    def transcribe(
        self,
        audio: AudioInput,
        speaker_id: str | None = None,
        head_id: str | None = None,
        filename: str | None = None,
    ) -> Transcription:
        """With the speaker's head in service (or ``head_id``); with the base model when ``speaker_id`` is None."""
        files = {"audio": _audio_part(audio, filename)}
        if speaker_id is None:
            if head_id is not None:
                raise ValueError("head_id needs speaker_id")
            return Transcription.model_validate(self._json("POST", "/v1/transcriptions", files=files))
        data = {"head_id": head_id} if head_id else None
        body = self._json("POST", f"/v1/speakers/{speaker_id}/transcriptions", files=files, data=data)
        return Transcription.model_validate(body)


_FILENAME = re.compile(r'filename="([^"/\\]+)"')


def _attachment_name(response: httpx.Response, head_id: str) -> str:
    match = _FILENAME.search(response.headers.get("content-disposition", ""))
    return match.group(1) if match else f"head-{head_id}.safetensors"


def _save_verified(response: httpx.Response, target: Path) -> Path:
    expected = response.headers.get("x-content-sha256")
    partial = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for chunk in response.iter_bytes():
                digest.update(chunk)
                out.write(chunk)
        if expected and digest.hexdigest() != expected:
            raise errors.ArtifactIntegrityError(
                f"{target.name}: sha256 {digest.hexdigest()} differs from the announced {expected}"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
