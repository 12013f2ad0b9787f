"""2. Serving: a batch of utterances with different speakers' heads (and none) in one ``transcribe`` call, against
one call per utterance and one head for all: equivalence (encoder outputs, transcripts) and throughput; on CUDA a
batch-size sweep, and the GPU's results against the CPU's (cross-device agreement)."""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from hra.bench.device.common import SAMPLE_RATE, compare_texts, peak_mib, reset_peak, timed


def serving_pool(foundation, n_linear: int = 4, n_ffn: int = 3, scale: float = 0.1) -> list:
    """Distinct heads, identical on every device: the shipped priors (zero heads without one) and seeded
    perturbations of them (noise of ``scale`` x each tensor's std), made on the CPU, then moved."""
    from hra.training.head import load_prior_head

    pool = []
    for t, (head_type, n) in enumerate((("linear", n_linear), ("ffn", n_ffn))):
        try:
            base = load_prior_head(foundation, head_type)
        except Exception:  # noqa: BLE001 - no prior for this foundation: zero heads, perturbed
            base = foundation.new_head(head_type)
        base = copy.deepcopy(base).to("cpu")
        for k in range(n):
            head = copy.deepcopy(base)
            if k:
                gen = torch.Generator().manual_seed(1000 * t + k)
                with torch.no_grad():
                    for p in head.parameters():
                        std = float(p.float().std()) or 1e-2
                        p.add_(torch.randn(p.shape, generator=gen) * std * scale)
            pool.append(head.to(foundation.device).eval().requires_grad_(False))
    return pool


def batch_heads(pool: list, n: int) -> list:
    speakers = [*pool, None]
    return [speakers[i % len(speakers)] for i in range(n)]


def serving_waves(data, n: int) -> list[torch.Tensor]:
    waves = [w for w, _ in data.eval]
    return [waves[i % len(waves)] for i in range(n)]


def encoder_outputs(foundation, waves, heads) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Valid encoder frames of each sample: (mixed batch, each sample alone), float32 on the CPU."""
    from hra.inference import encode_with_heads

    # (encoder output, EncoderInput[, decoder hook]): the tuple grew a decoder hook; only the first two matter here.
    out, batch = encode_with_heads(foundation, waves, heads)[:2]
    frames = batch.frames.tolist()
    batched = [out[i, : frames[i]].float().cpu() for i in range(len(waves))]
    alone = []
    for w, h in zip(waves, heads):
        o, b = encode_with_heads(foundation, [w], [h])[:2]
        alone.append(o[0, : int(b.frames[0])].float().cpu())
    return batched, alone


def compare_encoders(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> dict:
    max_abs, max_rel, shape_mismatch = 0.0, 0.0, 0
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            shape_mismatch += 1
            continue
        diff = float((x - y).abs().max())
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / max(float(y.abs().max()), 1e-12))
    return {"max_abs_diff": max_abs, "max_rel_diff": max_rel, "shape_mismatches": shape_mismatch}



def run_serving(foundation, data, args: argparse.Namespace, keep: dict | None = None) -> dict:
    """Equivalence of mixed batches with one-at-a-time, and throughput."""
    from hra.inference import transcribe

    device = foundation.device
    n = args.serve_batch
    pool = serving_pool(foundation)
    waves = serving_waves(data, n)
    heads = batch_heads(pool, n)
    audio_seconds = sum(w.numel() for w in waves) / SAMPLE_RATE
    reps = args.serve_reps if device.type == "cuda" else 1
    out: dict[str, Any] = {
        "device": device.type,
        "batch": n,
        "speakers": len(pool) + 1,
        "heads": {"linear": 4, "ffn": 3, "none": sum(h is None for h in heads)},
        "audio_seconds": round(audio_seconds, 2),
    }

    # Warm (CUDA kernels for these shapes), then equivalence on encoder outputs.
    transcribe(foundation, waves[:2], heads[:2])
    batched_enc, alone_enc = encoder_outputs(foundation, waves, heads)
    out["encoder_batched_vs_alone"] = compare_encoders(batched_enc, alone_enc)

    def mixed() -> list[str]:
        return transcribe(foundation, waves, heads, batch_size=n)

    def one_at_a_time() -> list[str]:
        return [transcribe(foundation, [w], [h])[0] for w, h in zip(waves, heads)]

    same_head = [pool[0]] * n

    def one_head() -> list[str]:
        return transcribe(foundation, waves, same_head, batch_size=n)

    def measure(fn: Callable[[], list[str]]) -> tuple[list[str], float]:
        times, texts = [], []
        for _ in range(reps):
            texts, seconds = timed(device, fn)
            times.append(seconds)
        return texts, statistics.median(times)

    reset_peak(device)
    mixed_texts, t_mixed = measure(mixed)
    out["serve_peak_mib"] = peak_mib(device)
    single_texts, t_single = measure(one_at_a_time)
    _, t_one_head = measure(one_head)
    out["transcripts_batched_vs_alone"] = compare_texts(mixed_texts, single_texts)
    out["seconds"] = {"mixed_batch": round(t_mixed, 4), "one_at_a_time": round(t_single, 4),
                      "one_head_batch": round(t_one_head, 4)}
    out["utt_per_s"] = {
        "mixed_batch": round(n / t_mixed, 2),
        "one_at_a_time": round(n / t_single, 2),
        "one_head_batch": round(n / t_one_head, 2),
    }
    out["audio_s_per_s"] = {k: round(audio_seconds / v, 1) for k, v in
                            (("mixed_batch", t_mixed), ("one_at_a_time", t_single), ("one_head_batch", t_one_head))}
    out["batched_speedup"] = round(t_single / t_mixed, 2)
    out["reps"] = reps

    if device.type == "cuda" and args.sweep:
        sweep = {}
        for size in args.sweep:
            w = serving_waves(data, size)
            h = batch_heads(pool, size)
            transcribe(foundation, w, h, batch_size=size)  # warm this shape
            _, seconds = measure(lambda: transcribe(foundation, w, h, batch_size=size))
            sweep[str(size)] = {"seconds": round(seconds, 4), "utt_per_s": round(size / seconds, 2)}
        out["sweep_mixed_batch"] = sweep

    if keep is not None:
        keep.update(mixed_texts=mixed_texts, batched_enc=batched_enc)
    return out


def cross_device(gpu_keep: dict, cpu_file: Path) -> dict:
    """The GPU's mixed-batch transcripts and encoder outputs vs the CPU serving child's (same waves, same heads)."""
    cpu = torch.load(cpu_file, map_location="cpu")
    return {
        "encoder_cuda_vs_cpu": compare_encoders(gpu_keep["batched_enc"], cpu["batched_enc"]),
        "transcripts_cuda_vs_cpu": compare_texts(gpu_keep["mixed_texts"], cpu["mixed_texts"]),
    }
