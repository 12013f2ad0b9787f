"""The command line and the run: ``python -m hra.bench.device --out FILE [options]`` (``--help``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import hra.bench.device
from hra.bench.device.children import Children, cpu_child_specs, run_child
from hra.bench.device.common import DEFAULT_VOICE, Recorder, configure, environment, load_data, timed
from hra.bench.device.report import headline, print_tables
from hra.bench.device.serving import cross_device, run_serving
from hra.bench.device.training import run_base, warm_up
from hra.bench.paths import CORPUS

SECTIONS = ("train", "serve")
SERVICE_MOVED = ("the 'service' section drives the service, not the ML package: run "
                 "`python benchmarks/service_training.py --into OUT` after this command (it adds 'service' to OUT)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hra.bench.device",
                                description=hra.bench.device.__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cuda | cpu | auto (CUDA when present)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--voice", default=DEFAULT_VOICE)
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--n-eval", type=int, default=40)
    p.add_argument("--heads", default="linear,ffn")
    p.add_argument("--precisions", default="auto,float32", help="on --device (the CPU children: auto [+ float32])")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="train, serve (the service's path: benchmarks/service_training.py)")
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
    if "service" in args.sections:
        p.error(SERVICE_MOVED)
    if unknown := sorted(args.sections - set(SECTIONS)):
        p.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
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
    """This process's own work: base WER, serving (training runs in fresh child processes)."""
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
