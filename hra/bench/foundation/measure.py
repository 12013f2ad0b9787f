"""The measurements: the served base, each system trained on a voice's enrollment and scored on its held-out
utterances (and gated like the product), and real speech against faster-whisper. Each is kept in the results store
under a key of what it depends on, so it is measured once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace

from hra.baselines import DEFAULT_LEARNING_RATES, train_adapter, transcribe_adapted
from hra.baselines.adapters import tensors_to_bytes
from hra.bench.foundation.data import VoiceData, load_real_speech
from hra.bench.foundation.options import BenchOptions, System
from hra.bench.foundation.scoring import gate_decision, score, utterance_errors
from hra.bench.foundation.store import ResultStore
from hra.bench.foundation.variants import Foundations
from hra.bench.paths import real_speech_rows
from hra.bench.speed import REFERENCE_STEP_SECONDS, speed_factor
from hra.errors import FoundationMismatch
from hra.inference import transcribe
from hra.training.head import HeadTrainingOptions, train_head


class Bench:
    def __init__(self, options: BenchOptions, foundations: Foundations) -> None:
        self.options = options
        self.f = foundations
        self.store = ResultStore(options.work_dir / "results.jsonl", options.import_results)
        self.trainings: list[float] = []
        self.log: Callable[[str], None] = print

    @property
    def speed_factor(self) -> float:
        """The given factor, else measured once, when the first training needs it (a run that finds everything
        in its store measures nothing)."""
        if self.options.speed_factor is None:
            factor, step_seconds = speed_factor(self.f.trained)
            self.options = replace(self.options, speed_factor=round(factor, 3))
            nominal = self.options.training.max_seconds
            self.log(f"reference step {step_seconds:.2f} s here, {REFERENCE_STEP_SECONDS:.2f} s on the reference "
                     f"machine: speed factor {self.options.speed_factor:.2f}, training budget "
                     f"{nominal * self.options.speed_factor:.0f} s of wall clock ({nominal:.0f} reference seconds)")
        return self.options.speed_factor

    @property
    def training(self) -> HeadTrainingOptions:
        """What trainings get here: the nominal budget (in the measurement keys) scaled to this machine's speed."""
        return replace(self.options.training, max_seconds=self.options.training.max_seconds * self.speed_factor)

    def _key(self, kind: str, system: System | None = None, **parts: object) -> str:
        """A measurement's key covers exactly what it depends on: the base and real speech only the backbone
        (with its context and decoding) and the held-out set; a system also the controller it runs on, the
        training recipe and its own configuration. A new controller re-measures the systems, not the base."""
        f = self.f
        backbone = f.trained.backbone if system is not None else f.trained.serving_base
        decoding = getattr(getattr(backbone, "options", None), "decoding", None)  # the context is in the fingerprint
        key: dict[str, object] = {"kind": kind, "backbone": backbone.fingerprint,
                                  "decoding": decoding.result_identity() if decoding is not None else repr(None),
                                  **parts}
        if kind != "real_speech":
            key["n_eval"] = self.options.n_eval
        if system is not None:
            key["training"] = self.options.training.to_record()
            key["system"] = asdict(system)
            if system.adapter is not None:
                key["adapter"] = {**self.options.adapter_config(system.adapter).to_dict(), "init": "seeded"}
                key["learning_rate"] = DEFAULT_LEARNING_RATES[system.adapter]
            else:
                foundation = f.for_system(system)
                key["foundation"] = foundation.fingerprint if foundation is not None else None
        return ResultStore.key(**key)

    def base(self, data: VoiceData) -> dict:
        key = self._key("base", voice=data.voice)
        if (hit := self.store.get(key)) is not None:
            return hit
        start = time.monotonic()
        hyps = transcribe(self.f.trained, [w for w, _ in data.eval])
        record = {"key": key, "kind": "base", "voice": data.voice, "group": data.group, "voice_kind": data.kind,
                  "size": 0, "system": "base", **score([t for _, t in data.eval], hyps),
                  "eval_seconds": round(time.monotonic() - start, 2), "hypotheses": hyps}
        return self.store.put(record)

    def base_gate(self, data: VoiceData) -> dict:
        """The served base on the gate utterances (what a speaker's first head is gated against)."""
        key = self._key("base_gate", voice=data.voice, n_gate=len(data.gate))
        if (hit := self.store.get(key)) is not None:
            return hit
        hyps = transcribe(self.f.trained, [w for w, _ in data.gate])
        record = {"key": key, "kind": "base_gate", "voice": data.voice, "group": data.group,
                  "utterance_errors": utterance_errors([t for _, t in data.gate], hyps), "hypotheses": hyps}
        return self.store.put(record)

    def system(self, data: VoiceData, size: int, system: System) -> dict:
        key = self._key("system", system, voice=data.voice, size=size)
        # The gate does not change what is measured, so it is not in the key; --regate measures again what was
        # measured without one.
        regate = self.options.regate and self.options.measure and data.gate
        if (hit := self.store.get(key)) is not None and not (regate and "gate" not in hit):
            return hit
        enrollment = data.train[:size]
        waves = [w for w, _ in data.eval]
        refs = [t for _, t in data.eval]
        record = {"key": key, "kind": "system", "voice": data.voice, "group": data.group, "voice_kind": data.kind,
                  "size": size, "system": system.name, "family": system.family}
        if not self.options.measure:
            return {**record, "skipped": "not measured (--summarize-only)"}
        if system.head_type is not None:
            foundation = self.f.for_system(system)
            if foundation is None:
                why = self.f.variant_kinds[system.controller]
                return {**record, "skipped": f"no {system.controller!r} controller: {why}"}
            training = replace(self.training, head_type=system.head_type, init=system.init)
            try:
                result = train_head(foundation, enrollment, training)
            except (FileNotFoundError, FoundationMismatch) as exc:  # no population prior for this controller
                return {**record, "skipped": str(exc)}
            model, metrics = result.head, result.metrics
            run_model = lambda ws: transcribe(foundation, ws, [model] * len(ws))  # noqa: E731
            start = time.monotonic()
            hyps = run_model(waves)
            tensors = dict(model.state_dict())
        else:
            result = train_adapter(self.f.trained.backbone, enrollment, self.options.adapter_config(system.adapter),
                                   self.training)
            model, metrics = result.adapter, result.metrics
            run_model = lambda ws: transcribe_adapted(self.f.trained.backbone, model, ws)  # noqa: E731
            start = time.monotonic()
            hyps = run_model(waves)
            tensors = model.trainable_tensors()
        eval_seconds = time.monotonic() - start
        if data.gate:
            gate_refs = [t for _, t in data.gate]
            candidate = utterance_errors(gate_refs, run_model([w for w, _ in data.gate]))
            record["gate"] = gate_decision(self.base_gate(data)["utterance_errors"], candidate)
        self.trainings.append(metrics["seconds"])
        record.update(score(refs, hyps))
        record.update({
            "parameters": metrics["parameters"],
            "stored_bytes": len(tensors_to_bytes(tensors)),
            "train_seconds": metrics["seconds"],
            "speed_factor": self.speed_factor,
            "budget_seconds": round(self.training.max_seconds, 2),
            "eval_seconds": round(eval_seconds, 2),
            "epochs": metrics["epochs"], "steps": metrics["steps"], "best_epoch": metrics["best_epoch"],
            "stopped_by": metrics["stopped_by"], "holdout_loss": metrics["holdout_loss"],
            "holdout_loss_initial": metrics["holdout_loss_initial"],
            "learning_rate": metrics.get("learning_rate", metrics.get("options", {}).get("learning_rate")),
            "hypotheses": hyps,
        })
        return self.store.put(record)

    def real_speech(self) -> dict:
        """The served base and faster-whisper (beam 5, int8, the same wheel) on ``options.real_speech``'s recordings.
        The key covers the backbone; a stored measurement is reused only if it was of these files and transcripts."""
        key = self._key("real_speech")
        rows = real_speech_rows(self.options.real_speech)
        hit = self.store.get(key)
        if hit is not None and hit["files"] == [r["file"] for r in rows] and hit["references"] == [
                r["transcript"] for r in rows]:
            return hit
        from faster_whisper import WhisperModel

        from hra.backbone.whisper import wheel_model_dir

        recordings = load_real_speech(self.options.real_speech)
        waves, refs = recordings.waves, recordings.references
        start = time.monotonic()
        ours = transcribe(self.f.trained, waves)
        ours_seconds = time.monotonic() - start
        model = WhisperModel(str(wheel_model_dir()), device="cpu", compute_type="int8",
                             cpu_threads=self.options.threads)
        start = time.monotonic()
        theirs = []
        for wave in waves:
            segments, _ = model.transcribe(wave.numpy(), beam_size=5, language="en")
            theirs.append(" ".join(s.text.strip() for s in segments).strip())
        fw_seconds = time.monotonic() - start
        record = {
            "key": key, "kind": "real_speech", "files": recordings.files,
            "base": {**score(refs, ours), "seconds": round(ours_seconds, 2), "hypotheses": ours},
            "faster_whisper_beam5_int8": {**score(refs, theirs), "seconds": round(fw_seconds, 2),
                                          "hypotheses": theirs},
            "references": refs,
        }
        return self.store.put(record)
