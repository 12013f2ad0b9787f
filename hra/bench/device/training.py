"""1. Training: a head as the train worker trains it (``train_head``), scored on the voice's eval utterances; the
served base's WER; a worker's later jobs (a new speaker, the same voice again); the first CUDA calls' warm-up."""

from __future__ import annotations

import argparse
from typing import Any

import torch

from hra.bench.device.common import load_data, peak_mib, reset_peak, timed


def training_options(args: argparse.Namespace, head_type: str, precision: str):
    from hra.training.head import HeadTrainingOptions

    extra: dict[str, Any] = {}
    if args.tiny:
        extra["speed_perturb"] = ()
    return HeadTrainingOptions(
        head_type=head_type, precision=precision, max_seconds=args.max_seconds, max_epochs=args.max_epochs, **extra
    )


def run_base(foundation, data, device: torch.device) -> dict:
    from hra.bench.foundation.scoring import score
    from hra.inference import transcribe

    waves = [w for w, _ in data.eval]
    refs = [t for _, t in data.eval]
    hyps, seconds = timed(device, lambda: transcribe(foundation, waves, [None] * len(waves)))
    return {**score(refs, hyps), "eval_seconds": round(seconds, 3)}


def run_training(foundation, data, args: argparse.Namespace, head_type: str, precision: str) -> tuple[dict, Any]:
    from hra.bench.foundation.scoring import score
    from hra.inference import transcribe
    from hra.training.head import train_head

    device = foundation.device
    options = training_options(args, head_type, precision)
    reset_peak(device)
    result, wall = timed(device, lambda: train_head(foundation, data.train, options))
    train_peak = peak_mib(device)
    m = result.metrics
    waves = [w for w, _ in data.eval]
    refs = [t for _, t in data.eval]
    hyps, eval_seconds = timed(device, lambda: transcribe(foundation, waves, [result.head] * len(waves)))
    row = {
        "device": device.type,
        "head_type": head_type,
        "precision_option": precision,
        "precision": m["precision"],
        "init": m["init"],
        "parameters": m["parameters"],
        "train_seconds": m["seconds"],
        "train_wall_seconds": round(wall, 3),
        "prepare_seconds": m["prepare_seconds"],
        "epochs": m["epochs"],
        "steps": m["steps"],
        "stopped_by": m["stopped_by"],
        "best_epoch": m["best_epoch"],
        "holdout_loss": m["holdout_loss"],
        "holdout_loss_initial": m["holdout_loss_initial"],
        "seconds_per_step": round((m["seconds"] - m["prepare_seconds"]) / max(1, m["steps"]), 4),
        "train_peak_mib": train_peak,
        "eval_seconds": round(eval_seconds, 3),
        **score(refs, hyps),
        "history": m["history"],
    }
    return row, result.head


def warm_up(foundation, data) -> dict:
    """First CUDA calls of this process pay for kernel loading: done once, outside the serving timings."""
    from hra.inference import transcribe

    device = foundation.device
    out = {}
    waves = [w for w, _ in data.eval[:2]]
    _, out["transcribe_base"] = timed(device, lambda: transcribe(foundation, waves))
    head = foundation.new_head("linear")
    _, out["transcribe_head"] = timed(device, lambda: transcribe(foundation, waves, [head] * len(waves)))
    return {k: round(v, 3) for k, v in out.items()}


def later_jobs(foundation, data, args: argparse.Namespace, head_type: str, precision: str) -> dict:
    """Seconds of the worker's next jobs: a new speaker (new batch shapes), then the first voice again."""
    from hra.training.head import train_head

    device = foundation.device
    options = training_options(args, head_type, precision)
    out: dict[str, Any] = {}
    if args.new_speaker_voice:
        other = load_data(args.corpus, args.new_speaker_voice, args.n_train, 0)
        result, wall = timed(device, lambda: train_head(foundation, other.train, options))
        out["new_speaker"] = {"voice": args.new_speaker_voice, "train_seconds": result.metrics["seconds"],
                              "wall_seconds": round(wall, 3), "steps": result.metrics["steps"],
                              "prepare_seconds": result.metrics["prepare_seconds"]}
    result, wall = timed(device, lambda: train_head(foundation, data.train, options))
    out["repeat_same_voice"] = {"train_seconds": result.metrics["seconds"], "wall_seconds": round(wall, 3),
                                "steps": result.metrics["steps"], "prepare_seconds": result.metrics["prepare_seconds"]}
    return out
