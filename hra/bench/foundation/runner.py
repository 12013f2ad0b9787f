"""One benchmark run: the corpus it needs, the foundations, every measurement the options ask for (from the results
store when it holds them), and the report."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch

from hra.bench.foundation.data import VoiceData, ensure_corpus, load_voice
from hra.bench.foundation.measure import Bench
from hra.bench.foundation.options import HEADLINE_SIZE, STANDARD_SIZE, SYSTEMS_BY_NAME, BenchOptions
from hra.bench.foundation.summary import summarize
from hra.bench.foundation.variants import build_foundations, context_label, product_systems


def run(options: BenchOptions) -> dict:
    torch.set_num_threads(options.threads)
    t_start = time.monotonic()
    n_held = options.n_eval + options.n_gate
    ensure_corpus(options.corpus, options.voices, max(options.sizes), n_held, jobs=2)
    ensure_corpus(options.corpus, options.standard_voices, STANDARD_SIZE, n_held, jobs=2)
    foundations = build_foundations(options)
    product = product_systems(foundations.trained)
    options = replace(options, systems_by_size={
        size: tuple(dict.fromkeys(product.get(n, n) for n in names)) for size, names in options.systems_by_size.items()
    })
    log = lambda msg: print(f"[{time.monotonic() - t_start:7.0f} s] {msg}", flush=True)  # noqa: E731
    bench = Bench(options, foundations)
    bench.log = log
    log(f"foundation {foundations.trained.fingerprint[:12]} ({foundations.controller_kind}); "
        f"context {context_label(foundations.trained)}; {len(options.voices)} new-speaker voices, "
        f"sizes {list(options.sizes)}, {len(options.standard_voices)} standard voices")

    real = bench.real_speech() if options.real_speech is not None else None
    if real is not None:
        log(f"real speech: base WER {real['base']['wer']:.3f}, faster-whisper beam 5 "
            f"{real['faster_whisper_beam5_int8']['wer']:.3f}")

    records: list[dict] = []
    standard: list[VoiceData] = []
    for voice in options.standard_voices:
        data = load_voice(options.corpus, voice, STANDARD_SIZE, options.n_eval, options.n_gate)
        standard.append(data)
        rec = bench.base(data)
        records.append(rec)
        log(f"{voice}: base WER {rec['wer']:.3f}")

    for data in standard:  # voices the base handles must not get worse (first: a partial run has them)
        for name in (product["linear"], product["ffn"]):
            rec = bench.system(data, STANDARD_SIZE, SYSTEMS_BY_NAME[name])
            records.append(rec)
            log(_describe(rec))

    for voice in options.voices:
        data = load_voice(options.corpus, voice, max(options.sizes), options.n_eval, options.n_gate)
        base = bench.base(data)
        records.append(base)
        log(f"{voice}: base WER {base['wer']:.3f} (capped {base['wer_capped']:.3f})")
        for size in sorted(options.sizes, key=lambda s: (s != HEADLINE_SIZE, s)):
            for name in options.systems_by_size.get(size, ()):
                rec = bench.system(data, size, SYSTEMS_BY_NAME[name])
                records.append(rec)
                log(_describe(rec))

    report = summarize(bench.options, foundations, records, real, product)
    report["timing"] = {
        "total_seconds_this_invocation": round(time.monotonic() - t_start, 1),
        "trainings_this_invocation": len(bench.trainings),
        "train_seconds_median": statistics.median(bench.trainings) if bench.trainings else None,
        "train_seconds_per_system_median": _median_by(records, "train_seconds"),
        "eval_seconds_per_system_median": _median_by(records, "eval_seconds"),
        "train_plus_eval_seconds_all_measurements": round(
            sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in records), 1),
    }
    return report


def _describe(rec: dict) -> str:
    if "skipped" in rec:
        return f"{rec['voice']} {rec['size']:>3} {rec['system']:<12} skipped: {rec['skipped']}"
    return (f"{rec['voice']} {rec['size']:>3} {rec['system']:<12} WER {rec['wer']:.3f} "
            f"(capped {rec['wer_capped']:.3f})  {rec['parameters']:>9,d} params  train {rec['train_seconds']:.0f} s "
            f"({rec['epochs']} ep, {rec['stopped_by']})"
            + (f"  gate: {rec['gate']['decision']}" if "gate" in rec else ""))


def _median_by(records: list[dict], field_name: str) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in records:
        if r["kind"] == "system" and field_name in r:
            by.setdefault(r["system"], []).append(r[field_name])
    return {k: round(statistics.median(v), 2) for k, v in by.items()}
