"""What every part of the device benchmark shares: timing on a device, peak memory, the environment, the record
of failed sections, process settings, the voice's data, and comparing transcripts."""

from __future__ import annotations

import argparse
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from hra.bench.foundation.data import VoiceData, load_voice

DEFAULT_VOICE = "espeak-pt-br"
SAMPLE_RATE = 16000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def environment(device: torch.device) -> dict:
    from hra.training.controller import cpu_name

    env: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            float32_matmul_precision=torch.get_float32_matmul_precision(),
            cudnn_sdp_enabled=torch.backends.cuda.cudnn_sdp_enabled(),
        )
    return env


class Recorder:
    """Collects section results and errors; ``guard`` runs a section and records its exception."""

    def __init__(self) -> None:
        self.errors: list[dict] = []

    def guard(self, section: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a benchmark records and goes on
            tb = traceback.format_exc()
            print(f"[{section}] FAILED: {exc!r}\n{tb}", flush=True)
            self.errors.append({"section": section, "error": repr(exc), "traceback": tb})
            return None


def configure(args: argparse.Namespace) -> None:
    """Process-wide settings of this run: threads, and (``--no-cudnn-sdp``) no cuDNN attention backend."""
    torch.set_num_threads(max(1, args.threads))
    if args.no_cudnn_sdp and args.device == "cuda":
        # cuDNN's SDPA (bfloat16/float16 only) builds an execution plan for every new shape: ~20 ms of CPU per
        # attention call the first time, which made a bfloat16 head's training several times slower on CUDA.
        torch.backends.cuda.enable_cudnn_sdp(False)


def load_data(corpus: Path, voice: str, n_train: int, n_eval: int) -> VoiceData:
    """The voice's first ``n_train`` train and ``n_eval`` eval utterances, as the foundation benchmark loads them."""
    return load_voice(corpus, voice, n_train, n_eval)


def compare_texts(a: Sequence[str], b: Sequence[str]) -> dict:
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return {
        "identical": len(a) - len(differ),
        "total": len(a),
        "examples": [{"i": i, "a": a[i], "b": b[i]} for i in differ[:4]],
    }
