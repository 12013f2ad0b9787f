"""Device benchmark: head training, batched mixed-head serving and the service's ML path on CUDA (or CPU).

    python -m hra.bench.device --device cuda --out benchmarks/results/device_h100.json [--no-cudnn-sdp]
    python -m hra.bench.device --device cpu --tiny --n-train 8 --n-eval 3 --max-epochs 1 --serve-batch 3 \
        --heads linear --precisions float32 --out /tmp/device_smoke.json                # smoke test, ~30 s

What an operator of a fleet of GPU workers wants to know before sending jobs to one:

1. **Training** (``hra.training.head.train_head``, what the train worker runs): linear and FFN heads with
   precision "auto" and "float32" ("auto" was bfloat16 autocast on CUDA when benchmarks/results/device_h100.json
   was measured; that measurement made it float32 there), on the first ``--n-train`` train utterances of
   ``--voice`` (sorted by id, as ``hra.bench.foundation.load_voice`` gives them); each head then transcribes the
   voice's first ``--n-eval`` eval utterances (``hra.inference.transcribe``) and is scored with
   ``hra.bench.foundation.score`` (WER after the shared text normalizer). The served base model is scored too.
   Train seconds (``train_head``'s own clock: data preparation included), its preparation share, epochs, steps,
   why it stopped, peak GPU memory. Each configuration runs in a fresh process, as a freshly started worker
   (foundation loaded, CUDA context made), one after another, so that no configuration inherits another's
   warmed-up kernels. On CUDA the same process then runs the worker's next jobs: a new speaker
   (``--new-speaker-voice``; other utterance lengths, so other batch shapes) and the first voice again (every
   shape seen): on CUDA a batch shape seen for the first time costs far more than a repeated one (kernel
   selection and loading per shape), and a worker sees new shapes with every speaker.
2. **Serving**: a batch of ``--serve-batch`` utterances, each with one of 7 heads (4 linear, 3 FFN: the shipped
   population priors and seeded perturbations of them, built on the CPU so that every device gets the same
   heads) or none, in one ``transcribe`` call (``HeadApplier``'s grouped path), against one call per utterance.
   Equivalence: encoder outputs (valid frames) of the mixed batch vs each sample alone, and the transcripts.
   Throughput: utterances/s (and audio seconds/s) mixed-batched, one-at-a-time, and one-head-for-all batched; on
   CUDA also a batch-size sweep.
3. **Service**: ``app.ml.HRAMLService`` with ``Settings(device=--device)``: foundation loading from the settings,
   ``decode_audio`` of the FLAC bytes, ``train`` (linear, the request's budget) -> artifact bytes, ``transcribe``
   with the artifact (WER) and without (base WER), a warm-started second version from the first artifact.

CPU baseline (``--cpu-baseline parallel``, the default with ``--device cuda``): the same training runs
(precision "auto", which is float32 on a CPU without native bfloat16, plus "float32" when "auto" differs) and the
serving measurements run on the same machine's CPU, one torch thread each, as child processes that run while the
GPU part runs (``sequential``: one after another, before it). Their results join this run's: ``cpu`` rows.
The serving child also keeps its mixed-batch transcripts and encoder outputs, which are compared with the GPU's
(cross-device agreement).

``--no-cudnn-sdp`` turns PyTorch's cuDNN attention backend off (in every process of the run): measured on an H100,
it builds a plan for every new attention shape in bfloat16 (~20 ms of CPU per call), which made precision "auto"
(bfloat16) head training 5x slower than float32 for every new speaker on a warm worker.

Every section is guarded: an exception is recorded (``errors``: section and traceback) and the run goes on.
Output: a table, ``--out`` (the whole record) and, as the last line, one JSON object with the headline numbers
(seconds, WER as fractions). Exit status 1 when a section failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VOICE = "espeak-pt-br"
SAMPLE_RATE = 16000


# ---- helpers ---------------------------------------------------------------------------------------------------


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


# ---- data ------------------------------------------------------------------------------------------------------


def load_data(corpus: Path, voice: str, n_train: int, n_eval: int):
    from hra.bench.foundation import load_voice

    return load_voice(corpus, voice, n_train, n_eval)


def eval_paths(corpus: Path, voice: str, n_eval: int) -> list[Path]:
    """The FLAC files of the voice's first n_eval eval utterances (the order load_voice uses)."""
    from hra.corpus.build import MANIFEST, read_manifest

    rows = [r for r in read_manifest(corpus / MANIFEST) if r["voice"] == voice and r["split"] == "eval"]
    rows = sorted(rows, key=lambda r: str(r["id"]))[:n_eval]
    return [corpus / str(r["path"]) for r in rows]


def train_paths(corpus: Path, voice: str, n_train: int) -> list[tuple[Path, str]]:
    from hra.corpus.build import MANIFEST, read_manifest

    rows = [r for r in read_manifest(corpus / MANIFEST) if r["voice"] == voice and r["split"] == "train"]
    rows = sorted(rows, key=lambda r: str(r["id"]))[:n_train]
    return [(corpus / str(r["path"]), str(r["text"])) for r in rows]


# ---- 1. training -----------------------------------------------------------------------------------------------


def training_options(args: argparse.Namespace, head_type: str, precision: str):
    from hra.training.head import HeadTrainingOptions

    extra: dict[str, Any] = {}
    if args.tiny:
        extra["speed_perturb"] = ()
    return HeadTrainingOptions(
        head_type=head_type, precision=precision, max_seconds=args.max_seconds, max_epochs=args.max_epochs, **extra
    )


def run_base(foundation, data, device: torch.device) -> dict:
    from hra.bench.foundation import score
    from hra.inference import transcribe

    waves = [w for w, _ in data.eval]
    refs = [t for _, t in data.eval]
    hyps, seconds = timed(device, lambda: transcribe(foundation, waves, [None] * len(waves)))
    return {**score(refs, hyps), "eval_seconds": round(seconds, 3)}


def run_training(foundation, data, args: argparse.Namespace, head_type: str, precision: str) -> tuple[dict, Any]:
    from hra.bench.foundation import score
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


# ---- 2. serving ------------------------------------------------------------------------------------------------


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


def compare_texts(a: Sequence[str], b: Sequence[str]) -> dict:
    differ = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return {
        "identical": len(a) - len(differ),
        "total": len(a),
        "examples": [{"i": i, "a": a[i], "b": b[i]} for i in differ[:4]],
    }


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


# ---- 3. the service's path -------------------------------------------------------------------------------------


def run_service(args: argparse.Namespace, work: Path) -> dict:
    from app.ml import HRAMLService, TrainingRequest, resolve_device
    from app.settings import Settings
    from hra.bench.foundation import score

    settings = Settings(device=args.device, torch_threads=args.threads, var_dir=work / "var")
    service = HRAMLService(settings)
    device = torch.device(resolve_device(settings.device))
    out: dict[str, Any] = {"settings_device": settings.device, "resolved_device": str(device),
                           "resolve_auto": resolve_device("auto")}
    _, out["warm_up_seconds"] = timed(device, service.warm_up)
    out["foundation_device"] = service.describe_foundation()["device"]

    def decode(path: Path):
        return service.decode_audio(path.read_bytes())

    train = [(decode(p).waveform, text) for p, text in train_paths(args.corpus, args.voice, args.n_train)]
    evals = [decode(p).waveform for p in eval_paths(args.corpus, args.voice, args.n_eval)]
    refs = [t for _, t in load_eval_texts(args.corpus, args.voice, args.n_eval)]
    steps: list[int] = []
    request = TrainingRequest(head_type="linear", max_seconds=args.max_seconds, max_epochs=args.max_epochs, seed=0,
                              metadata={"bench": "hra.bench.device"})
    trained, seconds = timed(
        device, lambda: service.train(train, request, None, lambda p: steps.append(p.step), lambda: False)
    )
    out["train_seconds"] = round(seconds, 3)
    out["train_metrics"] = {k: trained.metrics[k] for k in ("epochs", "steps", "stopped_by", "precision", "seconds")}
    out["progress_reports"] = len(steps)
    out["artifact_bytes"] = len(trained.artifact)
    hyps, t_eval = timed(device, lambda: service.transcribe(evals, [trained.artifact] * len(evals)))
    out["head"] = {**score(refs, hyps), "eval_seconds": round(t_eval, 3)}
    base_hyps, t_base = timed(device, lambda: service.transcribe(evals, [None] * len(evals)))
    out["base"] = {**score(refs, base_hyps), "eval_seconds": round(t_base, 3)}
    # Continual personalization: a second version warm-started from the first artifact (short budget).
    warm_request = TrainingRequest(
        head_type="linear", max_seconds=args.max_seconds, max_epochs=min(2, args.max_epochs), seed=1
    )
    second, t_second = timed(device, lambda: service.train(train, warm_request, trained.artifact,
                                                           lambda p: None, lambda: False))
    out["warm_start"] = {"seconds": round(t_second, 3), "init": second.metrics["init"],
                         "epochs": second.metrics["epochs"]}
    second_hyps, _ = timed(device, lambda: service.transcribe(evals, [second.artifact] * len(evals)))
    out["warm_start"]["wer"] = score(refs, second_hyps)["wer"]
    # Two speakers' artifacts and the base mixed in one call: each sample as it was alone with its own kind.
    mixed = [trained.artifact if i % 3 == 0 else second.artifact if i % 3 == 1 else None for i in range(len(evals))]
    mixed_hyps, t_mixed = timed(device, lambda: service.transcribe(evals, mixed))
    expected = [(hyps, second_hyps, base_hyps)[i % 3][i] for i in range(len(evals))]
    out["mixed_transcribe"] = {"seconds": round(t_mixed, 3), **compare_texts(mixed_hyps, expected)}
    out["word_errors_example"] = list(service.word_errors(refs[0], hyps[0]))
    return out


def load_eval_texts(corpus: Path, voice: str, n_eval: int) -> list[tuple[Path, str]]:
    from hra.corpus.build import MANIFEST, read_manifest

    rows = [r for r in read_manifest(corpus / MANIFEST) if r["voice"] == voice and r["split"] == "eval"]
    rows = sorted(rows, key=lambda r: str(r["id"]))[:n_eval]
    return [(corpus / str(r["path"]), str(r["text"])) for r in rows]


# ---- CPU baseline children -------------------------------------------------------------------------------------


def cpu_child_specs(args: argparse.Namespace) -> list[str]:
    from hra.training.head import resolve_precision

    cpu_precisions = ["auto"]
    if resolve_precision("auto", torch.device("cpu")) != torch.float32:
        cpu_precisions.append("float32")  # this CPU does bfloat16 natively: measure float32 too
    specs = [f"train:{h}:{p}" for h in args.heads for p in cpu_precisions] if "train" in args.sections else []
    if "serve" in args.sections:
        specs.append("serve")
    return specs


def child_command(args: argparse.Namespace, spec: str, out: Path, device: str) -> list[str]:
    cmd = [
        sys.executable, "-m", "hra.bench.device", "--child", spec, "--device", device, "--threads", "1",
        "--out", str(out), "--corpus", str(args.corpus), "--voice", args.voice, "--n-train", str(args.n_train),
        "--n-eval", str(args.n_eval), "--max-seconds", str(args.max_seconds), "--max-epochs", str(args.max_epochs),
        "--serve-batch", str(args.serve_batch), "--work-dir", str(args.work_dir),
        "--new-speaker-voice", args.new_speaker_voice,
    ]
    return cmd + (["--tiny"] if args.tiny else []) + (["--no-cudnn-sdp"] if args.no_cudnn_sdp else [])


def child_env(device: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class Children:
    """CPU-baseline child processes (one torch thread each), started here, waited for at the end."""

    def __init__(self, args: argparse.Namespace, device: str) -> None:
        self.args = args
        self.device = device
        self.procs: list[tuple[str, subprocess.Popen, Path, Path, float]] = []
        self.results: dict[str, dict] = {}

    def _paths(self, spec: str) -> tuple[Path, Path]:
        name = f"{self.device}_{spec.replace(':', '_')}"
        return self.args.work_dir / f"child_{name}.json", self.args.work_dir / f"child_{name}.log"

    def start(self, specs: Sequence[str], wait_each: bool) -> None:
        for spec in specs:
            out, log = self._paths(spec)
            out.unlink(missing_ok=True)
            print(f"{self.device} child {spec}: started", flush=True)
            with open(log, "w") as f:
                proc = subprocess.Popen(child_command(self.args, spec, out, self.device), stdout=f,
                                        stderr=subprocess.STDOUT, env=child_env(self.device), cwd=ROOT)
            self.procs.append((spec, proc, out, log, time.monotonic()))
            if wait_each:
                self._wait_one(self.procs[-1], self.args.child_timeout)

    def _wait_one(self, entry, timeout: float) -> None:
        spec, proc, out, log, started = entry
        if spec in self.results:
            return
        try:
            proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            proc.wait()
        record: dict[str, Any] = {"returncode": proc.returncode,
                                  "reaped_after_s": round(time.monotonic() - started, 1)}
        if out.is_file():
            record.update(json.loads(out.read_text()))
        else:
            record["log_tail"] = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
        print(f"{self.device} child {spec}: exit {proc.returncode}, reaped after {record['reaped_after_s']} s",
              flush=True)
        self.results[spec] = record

    def wait_all(self) -> dict[str, dict]:
        for entry in self.procs:
            spent = time.monotonic() - entry[4]
            self._wait_one(entry, self.args.child_timeout - spent)
        return self.results


def configure(args: argparse.Namespace) -> None:
    """Process-wide settings of this run: threads, and (``--no-cudnn-sdp``) no cuDNN attention backend."""
    torch.set_num_threads(max(1, args.threads))
    if args.no_cudnn_sdp and args.device == "cuda":
        # cuDNN's SDPA (bfloat16/float16 only) builds an execution plan for every new shape: ~20 ms of CPU per
        # attention call the first time, which made a bfloat16 head's training several times slower on CUDA.
        torch.backends.cuda.enable_cudnn_sdp(False)


def init_device(device: torch.device) -> None:
    """What a worker has done before its first job: CUDA context, cuBLAS handle (a tiny matmul)."""
    if device.type == "cuda":
        x = torch.randn(64, 64, device=device)
        float((x @ x).sum())
        sync(device)


def run_child(args: argparse.Namespace) -> int:
    """One measurement in a fresh process (a freshly started worker), written to --out as JSON.

    ``train:HEAD:PRECISION``: job 1 = the voice's head (timed, scored). On CUDA two more jobs follow in the same
    process, as on a long-lived worker: job 2 = a new speaker (``--new-speaker-voice``: other utterance lengths,
    so other batch shapes), job 3 = the first voice again (every batch shape seen before).
    ``serve``: the base WER and the serving measurements.
    """
    configure(args)
    from hra.foundation import load_foundation

    rec = Recorder()
    device = torch.device(args.device)
    (foundation, ready_s) = timed(device, lambda: (load_foundation(device=device), init_device(device))[0])
    data = load_data(args.corpus, args.voice, args.n_train, args.n_eval)
    result: dict[str, Any] = {"spec": args.child, "environment": environment(device),
                              "worker_ready_seconds": round(ready_s, 2)}
    if args.child.startswith("train:"):
        _, head_type, precision = args.child.split(":")
        got = rec.guard(args.child, lambda: run_training(foundation, data, args, head_type, precision))
        row = got[0] if got else None
        if row is not None and device.type == "cuda":
            row["worker_ready_seconds"] = round(ready_s, 2)
            row["later_jobs"] = rec.guard(f"{args.child} later jobs",
                                          lambda: later_jobs(foundation, data, args, head_type, precision))
        result["train"] = row
    elif args.child == "serve":
        result["base"] = rec.guard(f"{device.type} base", lambda: run_base(foundation, data, device))
        keep: dict = {}
        result["serve"] = rec.guard(f"{device.type} serve", lambda: run_serving(foundation, data, args, keep))
        if keep:
            torch.save(keep, args.work_dir / f"serve_{device.type}.pt")
    result["errors"] = rec.errors
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 1 if rec.errors else 0


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


# ---- report ----------------------------------------------------------------------------------------------------


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def print_tables(record: dict) -> None:
    rows = list(record.get("train", []))
    print()
    print(f"voice {record['voice']}: {record['n_train']} enrollment / {record['n_eval']} eval utterances")
    for name, base in (record.get("base") or {}).items():
        if base:
            print(f"base model served ({name}): WER {fmt(base['wer'])} (capped {fmt(base['wer_capped'])}), "
                  f"{fmt(base['eval_seconds'], 2)} s for {record['n_eval']} utterances")
    header = f"{'device':6} {'head':6} {'prec':9} {'train s':>8} {'prep s':>7} {'s/step':>7} {'ep':>3} " \
             f"{'steps':>5} {'stop':>14} {'WER':>6} {'capped':>6} {'eval s':>7} {'peak MiB':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if not r:
            continue
        print(f"{r['device']:6} {r['head_type']:6} {r['precision']:9} {fmt(r['train_seconds'], 1):>8} "
              f"{fmt(r['prepare_seconds'], 1):>7} {fmt(r['seconds_per_step'], 3):>7} {r['epochs']:>3} "
              f"{r['steps']:>5} {r['stopped_by']:>14} {fmt(r['wer']):>6} {fmt(r['wer_capped']):>6} "
              f"{fmt(r['eval_seconds'], 2):>7} {fmt(r['train_peak_mib'], 0):>8}")
    later = [r for r in rows if r and r.get("later_jobs")]
    if later:
        print()
        print("same worker process, later jobs (train s): first job = the row above; new speaker = "
              f"{record.get('new_speaker_voice') or '-'} (other batch shapes); repeat = the first voice again")
        for r in later:
            lj = r["later_jobs"]
            new = lj.get("new_speaker") or {}
            print(f"  {r['device']:5} {r['head_type']:6} {r['precision']:9} first {fmt(r['train_seconds'], 1):>6}"
                  f"  new speaker {fmt(new.get('train_seconds'), 1):>6}"
                  f"  repeat {fmt(lj['repeat_same_voice']['train_seconds'], 1):>6}"
                  f"  (worker ready in {fmt(r.get('worker_ready_seconds'), 1)} s)")
    print()
    for name, s in (record.get("serve") or {}).items():
        if not s:
            continue
        enc, txt = s["encoder_batched_vs_alone"], s["transcripts_batched_vs_alone"]
        print(f"serving {name}: batch {s['batch']} ({s['speakers']} speakers mixed), "
              f"utt/s mixed {s['utt_per_s']['mixed_batch']} | one-at-a-time {s['utt_per_s']['one_at_a_time']} | "
              f"one head {s['utt_per_s']['one_head_batch']} (x{s['batched_speedup']} batched); "
              f"batched==alone transcripts {txt['identical']}/{txt['total']}, "
              f"encoder max |diff| {enc['max_abs_diff']:.2e} (rel {enc['max_rel_diff']:.2e})")
        if s.get("sweep_mixed_batch"):
            print("  sweep (batch: utt/s): " + ", ".join(f"{k}: {v['utt_per_s']}"
                                                       for k, v in s["sweep_mixed_batch"].items()))
    cross = record.get("cross_device")
    if cross:
        e, t = cross["encoder_cuda_vs_cpu"], cross["transcripts_cuda_vs_cpu"]
        print(f"cuda vs cpu (mixed batch): transcripts {t['identical']}/{t['total']} identical, "
              f"encoder max |diff| {e['max_abs_diff']:.2e} (rel {e['max_rel_diff']:.2e})")
    svc = record.get("service")
    if svc:
        print(f"service ({svc['resolved_device']}): train {fmt(svc['train_seconds'], 1)} s "
              f"({svc['train_metrics']['epochs']} epochs, {svc['train_metrics']['precision']}), "
              f"head WER {fmt(svc['head']['wer'])}, base WER {fmt(svc['base']['wer'])}, "
              f"warm start {svc['warm_start']['init']} {fmt(svc['warm_start']['seconds'], 1)} s, "
              f"mixed artifacts == unmixed {svc['mixed_transcribe']['identical']}/"
              f"{svc['mixed_transcribe']['total']}")
    for err in record.get("errors", []):
        print(f"ERROR in {err['section']}: {err['error']}")


def headline(record: dict) -> dict:
    h: dict[str, Any] = {"bench": "hra.bench.device", "device": record["environment"]["device"]}
    env = record["environment"]
    if "gpu" in env:
        h["gpu"] = env["gpu"]
    h["cpu"] = env.get("cpu")
    for name, base in (record.get("base") or {}).items():
        if base:
            h[f"base_wer_{name}"] = round(base["wer"], 4)
    for r in record.get("train", []):
        if r:
            key = f"{r['device']}_{r['head_type']}_{r['precision']}"
            h[f"{key}_train_s"] = r["train_seconds"]
            h[f"{key}_epochs"] = r["epochs"]
            h[f"{key}_steps"] = r["steps"]
            h[f"{key}_wer"] = round(r["wer"], 4)
            lj = r.get("later_jobs") or {}
            if lj.get("new_speaker"):
                h[f"{key}_new_speaker_train_s"] = lj["new_speaker"]["train_seconds"]
            if lj.get("repeat_same_voice"):
                h[f"{key}_repeat_train_s"] = lj["repeat_same_voice"]["train_seconds"]
    for name, s in (record.get("serve") or {}).items():
        if s:
            h[f"serve_{name}_mixed_utt_per_s"] = s["utt_per_s"]["mixed_batch"]
            h[f"serve_{name}_single_utt_per_s"] = s["utt_per_s"]["one_at_a_time"]
            h[f"serve_{name}_batched_identical"] = s["transcripts_batched_vs_alone"]["identical"]
            h[f"serve_{name}_encoder_max_abs_diff"] = s["encoder_batched_vs_alone"]["max_abs_diff"]
    h["serve_batch"] = record.get("serve_batch")
    cross = record.get("cross_device")
    if cross:
        h["cuda_vs_cpu_identical"] = cross["transcripts_cuda_vs_cpu"]["identical"]
    svc = record.get("service")
    if svc:
        h["service_train_s"] = svc["train_seconds"]
        h["service_head_wer"] = round(svc["head"]["wer"], 4)
        h["service_base_wer"] = round(svc["base"]["wer"], 4)
    h["errors"] = len(record.get("errors", []))
    return h


# ---- main ------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hra.bench.device", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cuda | cpu | auto (CUDA when present)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--corpus", type=Path, default=ROOT / "corpus")
    p.add_argument("--voice", default=DEFAULT_VOICE)
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--n-eval", type=int, default=40)
    p.add_argument("--heads", default="linear,ffn")
    p.add_argument("--precisions", default="auto,float32", help="on --device (the CPU children: auto [+ float32])")
    p.add_argument("--sections", default="train,serve,service")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--max-epochs", type=int, default=12)
    p.add_argument("--serve-batch", type=int, default=32)
    p.add_argument("--serve-reps", type=int, default=3, help="timed repetitions on CUDA (median; CPU: 1)")
    p.add_argument("--sweep", default="1,8,16,32,64", help="CUDA batch sizes for the mixed-batch sweep ('' none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process (the workers' default)")
    p.add_argument("--cpu-baseline", choices=("parallel", "sequential", "none"), default=None,
                   help="default: parallel with a CUDA device, none on the CPU")
    p.add_argument("--child-timeout", type=float, default=480.0)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--new-speaker-voice", default="espeak-hu",
                   help="CUDA training children: the worker's second job, a new speaker ('' = none)")
    p.add_argument("--no-cudnn-sdp", action="store_true",
                   help="CUDA: disable the cuDNN attention backend (slow on every new shape in bfloat16)")
    p.add_argument("--tiny", action="store_true", help="smoke test: no speed perturbation; use small --n-* too")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.heads = [h for h in args.heads.split(",") if h]
    args.precisions = [x for x in args.precisions.split(",") if x]
    args.sections = {s for s in args.sections.split(",") if s}
    args.sweep = [int(x) for x in args.sweep.split(",") if x]
    if args.work_dir is None:
        args.work_dir = Path(tempfile.gettempdir()) / "hra_bench_device"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.cpu_baseline is None:
        args.cpu_baseline = "parallel" if args.device.startswith("cuda") else "none"
    args.device = torch.device(args.device).type  # "cuda:0" -> "cuda": the children are told the kind
    return args


def run_sections(args, rec: Recorder, record: dict, foundation, data, gpu_keep: dict, save) -> None:
    """This process's own work: base WER, serving, the service (training runs in fresh child processes)."""
    device = foundation.device
    if device.type == "cuda":
        record["warm_up_seconds"] = rec.guard("warm-up", lambda: warm_up(foundation, data))
        print(f"warm-up: {record['warm_up_seconds']}", flush=True)
    record["base"][device.type] = rec.guard("base", lambda: run_base(foundation, data, device))
    save()
    if "serve" in args.sections:
        record["serve"][device.type] = rec.guard("serve", lambda: run_serving(foundation, data, args, gpu_keep))
        print(f"serving: {json.dumps(record['serve'][device.type])[:400]}", flush=True)
        save()
    if "service" in args.sections:
        record["service"] = rec.guard("service", lambda: run_service(args, args.work_dir))
        print(f"service: {json.dumps(record['service'])[:400]}", flush=True)
        save()


def merge_children(rec: Recorder, record: dict, device: str, results: dict[str, dict]) -> None:
    for spec, res in results.items():
        record.setdefault("children", {})[f"{device} {spec}"] = {
            k: res.get(k) for k in ("returncode", "reaped_after_s", "worker_ready_seconds", "log_tail") if k in res
        }
        for err in res.get("errors", []):
            rec.errors.append({**err, "section": f"{device} child {spec}: {err['section']}"})
        if "spec" not in res:  # the child wrote no result
            rec.errors.append({"section": f"{device} child {spec}", "error": f"exit {res.get('returncode')}",
                               "traceback": res.get("log_tail", "")})
        if res.get("train"):
            record["train"].append(res["train"])
            row = res["train"]
            print(f"train {row['device']} {row['head_type']} {row['precision']}: {row['train_seconds']} s, "
                  f"{row['epochs']} epochs, {row['steps']} steps, WER {row['wer']:.3f}, "
                  f"later jobs {json.dumps(row.get('later_jobs'))}", flush=True)
        if res.get("serve"):
            record["serve"][device] = res["serve"]
        if res.get("base"):
            record["base"][device] = res["base"]
        if res.get("environment") and device == "cpu":
            record["cpu_environment"] = res["environment"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    configure(args)
    from hra.foundation import load_foundation

    rec = Recorder()
    device = torch.device(args.device)
    (args.work_dir / "serve_cpu.pt").unlink(missing_ok=True)
    record: dict[str, Any] = {
        "bench": "hra.bench.device",
        "command": " ".join(["python -m hra.bench.device", *(argv if argv is not None else sys.argv[1:])]),
        "voice": args.voice, "n_train": args.n_train, "n_eval": args.n_eval, "serve_batch": args.serve_batch,
        "max_seconds": args.max_seconds, "max_epochs": args.max_epochs,
        "new_speaker_voice": args.new_speaker_voice, "no_cudnn_sdp": args.no_cudnn_sdp,
        "train": [], "base": {}, "serve": {},
        "tree": os.environ.get("HRA_BENCH_TREE"),  # what the caller says about the working tree it ran
    }
    started = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every section: a run cut short still leaves what it measured
        record["errors"] = rec.errors
        args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False))

    # CPU baseline children first (they run beside everything else, one thread each, unless sequential).
    cpu_children = Children(args, "cpu")
    cpu_specs = cpu_child_specs(args) if args.cpu_baseline != "none" and device.type != "cpu" else []
    if cpu_specs:
        cpu_children.start(cpu_specs, wait_each=args.cpu_baseline == "sequential")
    # Training on the device: one fresh process per configuration, one after another (the device to itself).
    if "train" in args.sections:
        dev_children = Children(args, device.type)
        dev_children.start([f"train:{h}:{p}" for h in args.heads for p in args.precisions], wait_each=True)
        merge_children(rec, record, device.type, dev_children.results)
        save()

    loaded = rec.guard("foundation", lambda: timed(device, lambda: load_foundation(device=device)))
    record["environment"] = environment(device)
    gpu_keep: dict = {}
    if loaded is not None:
        foundation, load_s = loaded
        record["foundation"] = {"load_seconds": round(load_s, 2), "fingerprint": foundation.fingerprint,
                                "device": str(foundation.device)}
        data = load_data(args.corpus, args.voice, args.n_train, args.n_eval)
        print(f"foundation on {foundation.device} in {load_s:.1f} s; {len(data.train)} train / {len(data.eval)} "
              f"eval utterances of {args.voice}", flush=True)
        run_sections(args, rec, record, foundation, data, gpu_keep, save)
    if cpu_specs:
        merge_children(rec, record, "cpu", cpu_children.wait_all())
        cpu_file = args.work_dir / "serve_cpu.pt"
        if gpu_keep and device.type == "cuda" and cpu_file.is_file():
            record["cross_device"] = rec.guard("cross-device", lambda: cross_device(gpu_keep, cpu_file))
    record["total_seconds"] = round(time.perf_counter() - started, 1)
    save()
    print_tables(record)
    print(json.dumps(headline(record)), flush=True)
    return 1 if rec.errors else 0


if __name__ == "__main__":
    sys.exit(main())
