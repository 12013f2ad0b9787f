"""The command line: ``python -m hra.bench.foundation [options]`` (``--help``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import hra.bench.foundation
from hra.bench.foundation.options import (
    HEADLINE_SIZE, PRODUCT_HEADS, QUICK_VOICES, SYSTEMS_BY_NAME, VARIANT_CONTROLLERS, BenchOptions,
)
from hra.bench.foundation.runner import run
from hra.bench.foundation.tables import format_table
from hra.bench.paths import CORPUS, REAL_SPEECH, RESULTS_DIR, ROOT
from hra.training.head import HeadTrainingOptions


def parse_args(argv: list[str] | None = None) -> BenchOptions:
    from hra.corpus import select_voices

    p = argparse.ArgumentParser(prog="python -m hra.bench.foundation",
                                description=hra.bench.foundation.__doc__.splitlines()[0])
    p.add_argument("--voices", default="new_speaker", help="new-speaker voices: group names and/or voice names")
    p.add_argument("--standard-voices", default="standard", help="voices the base handles ('none': skip them)")
    p.add_argument("--sizes", default="20,50,100", help="enrollment sizes")
    p.add_argument("--systems", default=",".join(SYSTEMS_BY_NAME), help="systems at every size")
    p.add_argument("--at", action="append", default=[], metavar="SIZE=SYSTEMS",
                   help="systems at one size, instead of --systems (repeatable), e.g. 20=linear; 'linear' and 'ffn' "
                        "are the product's heads")
    p.add_argument("--import-results", action="append", default=[], type=Path, metavar="JSONL",
                   help="merge another run's results.jsonl into this one's (repeatable)")
    p.add_argument("--summarize-only", action="store_true",
                   help="train nothing: report what the results store holds (missing systems are left out)")
    p.add_argument("--quick", action="store_true",
                   help=f"{len(QUICK_VOICES)} voices; every system at 50, the product's linear head at 20 and 100")
    p.add_argument("--eval", type=int, default=40, help="held-out utterances per voice")
    p.add_argument("--gate", type=int, default=20,
                   help="eval utterances after the held-out ones on which the product's promotion gate decides "
                        "(0: no gate)")
    p.add_argument("--regate", action="store_true",
                   help="train again the systems the results store holds without a gate decision")
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench_foundation")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/foundation.json)")
    p.add_argument("--controller", type=Path, default=None, help="controller safetensors (default: the shipped one)")
    p.add_argument("--variant-controller", action="append", default=[], metavar="NAME=PATH",
                   help=f"a controller for a variant system ({', '.join(VARIANT_CONTROLLERS)}; default: "
                        "<work-dir>/controller_NAME, trained there when missing unless --quick)")
    p.add_argument("--train-variant-controllers", choices=("auto", "yes", "no"), default="auto",
                   help="train the variant systems' controllers when missing, ~25 min each (auto: not with --quick)")
    p.add_argument("--max-seconds", type=float, default=HeadTrainingOptions.max_seconds,
                   help="training budget of every system (reference seconds, data preparation included)")
    p.add_argument("--speed-factor", type=float, default=None,
                   help="wall-clock seconds per reference second (default: measured at the start, see "
                        "hra.bench.speed; 1: budgets in this machine's seconds)")
    p.add_argument("--beam-size", type=int, default=None,
                   help="decoding's beam for the base and every system (default: the product's; 1: greedy)")
    p.add_argument("--real-speech", type=Path, default=REAL_SPEECH, metavar="DIR",
                   help="recordings of real people: audio files and a manifest.jsonl of {file, transcript} "
                        "(default: benchmarks/data/real_speech)")
    p.add_argument("--no-real-speech", action="store_true", help="do not measure real speech")
    p.add_argument("--houlsby-bottleneck", type=int, default=64)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.speed_factor is not None and args.speed_factor <= 0:
        p.error(f"--speed-factor must be positive, got {args.speed_factor:g}")
    if args.beam_size is not None and args.beam_size < 1:
        p.error(f"--beam-size must be >= 1, got {args.beam_size}")

    def system_names(text: str) -> tuple[str, ...]:
        names = tuple(s for s in text.split(",") if s)
        unknown = [s for s in names if s not in SYSTEMS_BY_NAME and s not in PRODUCT_HEADS]
        if unknown:
            p.error(f"unknown systems {unknown}; known: {', '.join([*PRODUCT_HEADS, *SYSTEMS_BY_NAME])}")
        return names

    variant_paths: dict[str, Path] = {}
    for item in args.variant_controller:
        name, _, path = item.partition("=")
        if name not in VARIANT_CONTROLLERS or not path:
            p.error(f"--variant-controller wants NAME=PATH with NAME in {list(VARIANT_CONTROLLERS)}, got {item!r}")
        variant_paths[name] = Path(path)
    systems = system_names(args.systems)
    at: dict[int, tuple[str, ...]] = {}
    for item in args.at:
        size, _, names = item.partition("=")
        if not size.strip().isdigit():
            p.error(f"--at wants SIZE=SYSTEMS, got {item!r}")
        at[int(size)] = system_names(names)
    if args.quick:
        voices = QUICK_VOICES if args.voices == "new_speaker" else tuple(v.name for v in select_voices(args.voices))
        sizes = (20, HEADLINE_SIZE, 100)
        by_size = {20: ("linear",), HEADLINE_SIZE: systems, 100: ("linear",)}  # "linear": the product's head
    else:
        voices = tuple(v.name for v in select_voices(args.voices))
        sizes = tuple(int(s) for s in args.sizes.split(",") if s)
        by_size = {s: systems for s in sizes}
    for size, names in at.items():
        if size not in sizes:
            sizes = tuple(sorted({*sizes, size}))
        by_size[size] = names
    out = args.out or RESULTS_DIR / ("foundation_quick.json" if args.quick else "foundation.json")
    return BenchOptions(
        voices=voices, standard_voices=() if args.standard_voices == "none" else tuple(
            v.name for v in select_voices(args.standard_voices)),
        sizes=sizes, systems_by_size=by_size, n_eval=args.eval, n_gate=args.gate, regate=args.regate,
        corpus=args.corpus, work_dir=args.work_dir, out=out,
        controller=args.controller, variant_controllers=variant_paths,
        train_variant_controllers=args.train_variant_controllers == "yes" or (
            args.train_variant_controllers == "auto" and not args.quick),
        real_speech=None if args.no_real_speech else args.real_speech,
        quick=args.quick, training=HeadTrainingOptions(max_seconds=args.max_seconds),
        import_results=tuple(args.import_results), measure=not args.summarize_only,
        houlsby_bottleneck=args.houlsby_bottleneck, lora_rank=args.lora_rank, threads=args.threads,
        speed_factor=args.speed_factor, beam_size=args.beam_size,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    report = run(options)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(format_table(report))
    print(f"-> {options.out}")
    print(json.dumps(report["headline"]))
    return 0

