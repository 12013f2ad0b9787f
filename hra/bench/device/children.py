"""Measurements in fresh processes: each training configuration as a freshly started worker, and the CPU
baseline (one torch thread per child, beside the device's own measurements)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hra.bench.device.common import Recorder, configure, environment, load_data, sync, timed
from hra.bench.device.serving import run_serving
from hra.bench.device.training import later_jobs, run_base, run_training
from hra.bench.paths import ROOT


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
