"""Service benchmark: the service's own ML path (``app.hra_ml.HRAMLService``) on CUDA (or CPU), as a worker runs it.

    python benchmarks/service_training.py --device cuda --out /tmp/service.json
    python -m hra.bench.device --device cuda --out benchmarks/results/device_h100.json \
        && python benchmarks/service_training.py --into benchmarks/results/device_h100.json
    python benchmarks/service_training.py --device cpu --n-train 8 --n-eval 3 --max-epochs 1 --out /tmp/svc.json
                                                                                          # smoke test, ~1 min

``HRAMLService`` with ``Settings(device=--device)``: foundation loading from the settings, ``decode_audio`` of the
FLAC bytes of ``--voice``'s first ``--n-train`` train and ``--n-eval`` eval utterances (sorted by id, as
``hra.bench.foundation.data.load_voice`` takes them), ``train`` (linear, the request's budget) -> artifact bytes,
``transcribe`` with the artifact (WER) and without (base WER), a warm-started second version from the first
artifact, and both artifacts and the base mixed in one call (each sample as it was alone with its own kind).

This was section 3 of the device benchmark (``python -m hra.bench.device``); it drives the service (``app``), which
the ML package ``hra`` must not import, so it lives here. ``--into RECORD`` adds its result to a device benchmark's
record as ``service`` (and its errors to the record's ``errors``): the layout that one run of the device benchmark
wrote before, now written by two commands. Options not given are taken from that record (``--device``,
``--voice``, ``--n-train``, ``--n-eval``, ``--max-seconds``, ``--max-epochs``, ``--no-cudnn-sdp``), so that both
parts measure the same thing. ``--out`` writes a record of its own.

Run it from a checkout with the project installed (``pip install -e .``, as ``make deps`` does): ``app`` and
``hra`` then import from anywhere; ``benchmarks/`` is not an installed package, so run this file by its path (or,
from the repository root, ``python -m benchmarks.service_training``).
Output: a line, the JSON files, and as the last line one JSON object with the headline numbers (seconds, WER as
fractions). Exit status 1 when it failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from hra.bench.device.common import DEFAULT_VOICE, Recorder, compare_texts, configure, environment, timed
from hra.bench.foundation.scoring import score
from hra.bench.paths import CORPUS

BENCH = "benchmarks.service_training"
DEVICE_BENCH = "hra.bench.device"
# What the device benchmark's record holds and this benchmark takes from it when not given (its defaults else).
FROM_RECORD = {"voice": DEFAULT_VOICE, "n_train": 50, "n_eval": 40, "max_seconds": 60.0, "max_epochs": 12,
               "no_cudnn_sdp": False}


def corpus_files(corpus: Path, voice: str, split: str, n: int) -> list[tuple[Path, str]]:
    """The FLAC files and texts of the voice's first ``n`` utterances of ``split``, sorted by id."""
    from hra.corpus.build import MANIFEST, read_manifest

    rows = [r for r in read_manifest(corpus / MANIFEST) if r["voice"] == voice and r["split"] == split]
    rows = sorted(rows, key=lambda r: str(r["id"]))[:n]
    return [(corpus / str(r["path"]), str(r["text"])) for r in rows]


def run_service(args: argparse.Namespace, work: Path) -> dict:
    from app.hra_ml import HRAMLService, resolve_device
    from app.ml import TrainingRequest
    from app.settings import Settings

    settings = Settings(device=args.device, torch_threads=args.threads, var_dir=work / "var")
    service = HRAMLService(settings)
    device = torch.device(resolve_device(settings.device))
    out: dict[str, Any] = {"settings_device": settings.device, "resolved_device": str(device),
                           "resolve_auto": resolve_device("auto")}
    _, out["warm_up_seconds"] = timed(device, service.warm_up)
    out["foundation_device"] = service.describe_foundation()["device"]

    def decode(path: Path):
        return service.decode_audio(path.read_bytes())

    train = [(decode(p).waveform, text) for p, text in corpus_files(args.corpus, args.voice, "train", args.n_train)]
    eval_files = corpus_files(args.corpus, args.voice, "eval", args.n_eval)
    evals = [decode(p).waveform for p, _ in eval_files]
    refs = [t for _, t in eval_files]
    steps: list[int] = []
    request = TrainingRequest(head_type="linear", max_seconds=args.max_seconds, max_epochs=args.max_epochs, seed=0,
                              metadata={"bench": BENCH})
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


def merge_into(path: Path, service: dict | None, errors: list[dict]) -> dict:
    """The device benchmark's record at ``path`` with this run as its ``service`` (errors of an earlier service run
    replaced by this one's), written back."""
    record = json.loads(path.read_text())
    record["service"] = service
    record["errors"] = [e for e in record.get("errors", []) if e.get("section") != "service"] + errors
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return record


def describe(service: dict) -> str:
    return (f"service ({service['resolved_device']}): train {service['train_seconds']:.1f} s "
            f"({service['train_metrics']['epochs']} epochs, {service['train_metrics']['precision']}), "
            f"head WER {service['head']['wer']:.3f}, base WER {service['base']['wer']:.3f}, "
            f"warm start {service['warm_start']['init']} {service['warm_start']['seconds']:.1f} s, "
            f"mixed artifacts == unmixed {service['mixed_transcribe']['identical']}/"
            f"{service['mixed_transcribe']['total']}")


def headline(device: str, service: dict | None, errors: list[dict]) -> dict:
    h: dict[str, Any] = {"bench": BENCH, "device": device}
    if service:
        h["service_train_s"] = service["train_seconds"]
        h["service_head_wer"] = round(service["head"]["wer"], 4)
        h["service_base_wer"] = round(service["base"]["wer"], 4)
    h["errors"] = len(errors)
    return h


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/service_training.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="this run's own record")
    p.add_argument("--into", type=Path, default=None, metavar="RECORD",
                   help=f"a record of `python -m {DEVICE_BENCH}`: this run becomes its 'service' section")
    p.add_argument("--device", default=None, help="cuda | cpu | auto (default: the record's device, else auto)")
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--voice", default=None, help=f"default: the record's, else {FROM_RECORD['voice']}")
    p.add_argument("--n-train", type=int, default=None, help=f"default: the record's, else {FROM_RECORD['n_train']}")
    p.add_argument("--n-eval", type=int, default=None, help=f"default: the record's, else {FROM_RECORD['n_eval']}")
    p.add_argument("--max-seconds", type=float, default=None,
                   help=f"default: the record's, else {FROM_RECORD['max_seconds']:g}")
    p.add_argument("--max-epochs", type=int, default=None,
                   help=f"default: the record's, else {FROM_RECORD['max_epochs']}")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the service's setting)")
    p.add_argument("--work-dir", type=Path, default=None, help="the service's var folder goes under it")
    p.add_argument("--no-cudnn-sdp", action="store_true", default=None,
                   help="CUDA: disable the cuDNN attention backend (default: as the record's run)")
    args = p.parse_args(argv)
    if args.out is None and args.into is None:
        p.error("give --out, --into or both")
    record: dict = {}
    if args.into is not None:
        if not args.into.is_file():
            p.error(f"--into {args.into}: no such file (run `python -m {DEVICE_BENCH} --out {args.into}` first)")
        record = json.loads(args.into.read_text())
        if record.get("bench") != DEVICE_BENCH:
            p.error(f"--into {args.into}: not a record of {DEVICE_BENCH} (bench: {record.get('bench')!r})")
    for name, default in FROM_RECORD.items():
        if getattr(args, name) is None:
            setattr(args, name, record.get(name, default))
    if args.device is None:
        args.device = (record.get("environment") or {}).get("device", "auto")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = torch.device(args.device).type
    if args.work_dir is None:
        args.work_dir = Path(tempfile.gettempdir()) / "hra_bench_service"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure(args)
    rec = Recorder()
    service = rec.guard("service", lambda: run_service(args, args.work_dir))
    if service is not None:
        print(f"service: {json.dumps(service)[:400]}", flush=True)
    if args.out is not None:
        own = {
            "bench": BENCH,
            "command": " ".join([f"python benchmarks/{Path(__file__).name}",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "voice": args.voice, "n_train": args.n_train, "n_eval": args.n_eval, "max_seconds": args.max_seconds,
            "max_epochs": args.max_epochs, "no_cudnn_sdp": args.no_cudnn_sdp,
            "environment": environment(torch.device(args.device)), "service": service, "errors": rec.errors,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(own, indent=1, ensure_ascii=False))
        print(f"-> {args.out}")
    if args.into is not None:
        merge_into(args.into, service, rec.errors)
        print(f"-> {args.into} (service)")
    if service is not None:
        print(describe(service))
    for err in rec.errors:
        print(f"ERROR in {err['section']}: {err['error']}")
    print(json.dumps(headline(args.device, service, rec.errors)), flush=True)
    return 1 if rec.errors else 0


if __name__ == "__main__":
    sys.exit(main())
