"""CTranslate2 decoding of our encoder output against the Python beam search, and faster-whisper, in one run.

    python -m hra.bench.ct2_decoding [--threads 1] [--compute-types float32,int8] [--train-seconds 45]

The same encoder output (the PyTorch encoder, heads applied through the HRA hook) is decoded by the Python beam
search (``GuardedDecoder``) and by CTranslate2's (``hra.backbone.ct2_decoding``), beam 5, one utterance at a time;
faster-whisper (int8, beam 5, the wheel's model directory, ``cpu_threads`` = threads) transcribes the same audio.
Sets: the 16 real recordings (base in the 30-s window; the shipped linear prior head in the head context) and a
small pt-br accented synthetic speaker (``tests/fixtures/speaker_ptbr``: a linear head trained on its train split for
``--train-seconds``, scored on its eval split; the base too); with ``--standard-voices``, the base on a synthetic
standard-voice corpus's eval split. Gate: CTranslate2's WER within 0.005 (absolute) of the
Python decoder's on the real recordings (base, prior head) and the trained head (``GATE_SETS``). Also batched
transcription (``hra.inference.transcribe``, batches of 16) per decoder. Times: wall and CPU seconds of the process
(one thread everywhere: on a shared machine CPU time is the steadier measure).

Writes ``benchmarks/results/ct2_decoding.json``; the last line printed is one JSON object of headline numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from hra.adapter.artifacts import head_from_bytes, head_to_bytes
from hra.backbone.ct2_decoding import Ct2Decoder, Ct2Options
from hra.bench.foundation.data import read_wave
from hra.bench.foundation.scoring import score
from hra.bench.paths import REAL_SPEECH, RESULTS_DIR, ROOT, real_speech_rows
from hra.foundation import Foundation, load_foundation
from hra.inference import SAMPLE_RATE, decode_encoded, encode_with_heads, transcribe
from hra.training.head import HeadTrainingOptions, load_prior_head, train_head

SPEAKER = ROOT / "tests" / "fixtures" / "speaker_ptbr"
GATE_TOLERANCE = 0.005
# The gate: the base on the real recordings, the shipped prior head on them, a head trained on the pt-br speaker.
# "ptbr_base" (the base on that speaker, WER > 1: hallucinations of a model that cannot read the voice) is reported
# beside it (``gates_all_sets``).
GATE_SETS = ("real_base", "real_prior_head", "ptbr_trained_head")


def _speaker(folder: Path) -> tuple[list[tuple[torch.Tensor, str]], list[tuple[torch.Tensor, str]]]:
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    split = {"train": [], "eval": []}
    for r in rows:
        split[r["split"]].append((read_wave(folder / r["file"]), r["text"]))
    return split["train"], split["eval"]


def _corpus_eval(folder: Path) -> list[tuple[torch.Tensor, str]]:
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [(read_wave(folder / r["path"]), r["text"]) for r in rows if r["split"] == "eval"]


def _decode_each(foundation_by_decoder: dict[str, Foundation], waves, heads) -> dict:
    """One utterance at a time: encode once (timed), decode the same encoder output with every decoder (timed)."""
    base = next(iter(foundation_by_decoder.values()))
    out = {name: {"texts": [], "tokens": [], "decode_s": [], "decode_cpu_s": []} for name in foundation_by_decoder}
    encode_s, encode_cpu_s = [], []
    for wave, head in zip(waves, heads):
        backbone = base.backbone if head is not None else base.serving_base
        start, cpu = time.perf_counter(), time.process_time()
        encoder_out, batch, hook = encode_with_heads(base, [wave], [head], backbone)
        encode_s.append(time.perf_counter() - start)
        encode_cpu_s.append(time.process_time() - cpu)
        duration = [wave.numel() / SAMPLE_RATE]
        for name, foundation in foundation_by_decoder.items():
            start, cpu = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                result = decode_encoded(foundation, backbone, encoder_out, duration, batch.frames, hook,
                                        detailed=True)[0]
            out[name]["decode_s"].append(time.perf_counter() - start)
            out[name]["decode_cpu_s"].append(time.process_time() - cpu)
            out[name]["texts"].append(result.text)
            out[name]["tokens"].append(list(result.tokens))
    return {"encode_s": encode_s, "encode_cpu_s": encode_cpu_s, "decoders": out}


def _faster_whisper(model, waves, **options) -> tuple[list[str], list[float], list[float]]:
    texts, seconds, cpu_seconds = [], [], []
    for wave in waves:
        start, cpu = time.perf_counter(), time.process_time()
        segments, _ = model.transcribe(wave.numpy(), beam_size=5, language="en", **options)
        texts.append(" ".join(s.text.strip() for s in segments).strip())
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu)
    return texts, seconds, cpu_seconds


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real-speech", type=Path, default=REAL_SPEECH)
    p.add_argument("--speaker", type=Path, default=SPEAKER, help="a speaker folder (manifest.jsonl with splits)")
    p.add_argument("--train-seconds", type=float, default=45.0, help="head training budget on --speaker (0: skip)")
    p.add_argument("--head", type=Path, help="the --speaker head's artifact: loaded if it exists, else trained and "
                   "written there (the same head across runs)")
    p.add_argument("--standard-voices", type=Path,
                   help="a corpus folder built by `python -m hra.corpus build --voices standard` (its eval split is "
                        "decoded with the base: the set the base model's precision is judged on beside the real "
                        "recordings)")
    p.add_argument("--compute-types", default="float32,int8", help="CTranslate2 compute types to measure")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16, help="batched transcription (0: skip that part)")
    p.add_argument("--no-faster-whisper", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "ct2_decoding.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_run = time.perf_counter()

    python_f = load_foundation(decoder="python")
    foundations: dict[str, Foundation] = {"python": python_f}
    for ct in [c for c in args.compute_types.split(",") if c]:
        decoder = Ct2Decoder(python_f.backbone.source["model_dir"], python_f.backbone.tokenizer,
                             python_f.backbone.config.n_vocab, Ct2Options(compute_type=ct, threads=args.threads))
        foundations[f"ct2_{ct}"] = dataclasses.replace(python_f, ct2_decoder=decoder)

    rows = real_speech_rows(args.real_speech)
    real = [(read_wave(args.real_speech / r["file"]), r["transcript"]) for r in rows]
    sets: list[tuple[str, list, object]] = [("real_base", real, None)]
    prior = load_prior_head(python_f, "linear")
    sets.append(("real_prior_head", real, prior))
    train_info = {}
    if args.train_seconds > 0 and (args.speaker / "manifest.jsonl").is_file():
        train, held_out = _speaker(args.speaker)
        train_info = {"train_utterances": len(train), "eval_utterances": len(held_out)}
        if args.head is not None and args.head.is_file():
            trained = head_from_bytes(args.head.read_bytes(), python_f)
            train_info["head"] = str(args.head)
        else:
            start = time.perf_counter()
            trained = train_head(python_f, train, HeadTrainingOptions(max_seconds=args.train_seconds)).head
            train_info["train_seconds"] = round(time.perf_counter() - start, 1)
            print(f"trained a linear head on {len(train)} utterances in {train_info['train_seconds']} s", flush=True)
            if args.head is not None:
                args.head.parent.mkdir(parents=True, exist_ok=True)
                args.head.write_bytes(head_to_bytes(trained, python_f, {"bench": "ct2_decoding"}))
        sets += [("ptbr_base", held_out, None), ("ptbr_trained_head", held_out, trained)]
    if args.standard_voices is not None:
        sets.append(("standard_base", _corpus_eval(args.standard_voices), None))

    # Warm-up (not timed): both contexts, every decoder.
    _decode_each(foundations, [real[0][0], real[1][0]], [None, prior])

    fw_model = None
    if not args.no_faster_whisper:
        from faster_whisper import WhisperModel

        fw_model = WhisperModel(python_f.backbone.source["model_dir"], device="cpu", compute_type="int8",
                                cpu_threads=args.threads)
        _faster_whisper(fw_model, [real[0][0]])

    report: dict = {"threads": args.threads, "machine": platform.processor() or platform.machine(),
                    "beam_size": python_f.backbone.options.decoding.beam_size, "head_training": train_info, "sets": {}}
    for name, data, head in sets:
        waves, refs = [w for w, _ in data], [t for _, t in data]
        heads = [head] * len(waves)
        audio_s = sum(w.numel() for w in waves) / SAMPLE_RATE
        for f in foundations.values():
            if f.ct2_decoder is not None:
                f.ct2_decoder.samples = f.ct2_decoder.python_fallbacks = 0
        each = _decode_each(foundations, waves, heads)
        entry: dict = {"utterances": len(waves), "audio_seconds": round(audio_s, 1),
                       "encode_s_per_utt": _mean(each["encode_s"]), "encode_cpu_s_per_utt": _mean(each["encode_cpu_s"]),
                       "decoders": {}}
        py = each["decoders"]["python"]
        for dec, res in each["decoders"].items():
            wer = score(refs, res["texts"])["wer"]
            total = sum(each["encode_s"]) + sum(res["decode_s"])
            total_cpu = sum(each["encode_cpu_s"]) + sum(res["decode_cpu_s"])
            d = {"wer": round(wer, 4), "decode_s_per_utt": _mean(res["decode_s"]),
                 "decode_cpu_s_per_utt": _mean(res["decode_cpu_s"]),
                 "total_s_per_utt": round(total / len(waves), 4),
                 "total_cpu_s_per_utt": round(total_cpu / len(waves), 4),
                 "x_realtime": round(audio_s / total, 2), "x_realtime_cpu": round(audio_s / total_cpu, 2)}
            if dec != "python":
                d["tokens_identical"] = sum(a == b for a, b in zip(res["tokens"], py["tokens"]))
                d["wer_delta_vs_python"] = round(wer - score(refs, py["texts"])["wer"], 4)
                d["gate_pass"] = abs(d["wer_delta_vs_python"]) <= GATE_TOLERANCE
                d["decode_speedup_vs_python"] = round(sum(py["decode_s"]) / max(sum(res["decode_s"]), 1e-9), 2)
                d["decode_cpu_speedup_vs_python"] = round(
                    sum(py["decode_cpu_s"]) / max(sum(res["decode_cpu_s"]), 1e-9), 2)
                d["python_fallbacks"] = foundations[dec].ct2_decoder.python_fallbacks
                d["differences"] = [{"python": a, "ct2": b} for a, b in zip(py["texts"], res["texts"]) if a != b][:5]
            entry["decoders"][dec] = d
        if args.batch_size > 0:
            for dec, f in foundations.items():
                start, cpu = time.perf_counter(), time.process_time()
                hyps = transcribe(f, waves, None if head is None else heads, batch_size=args.batch_size)
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
                entry["decoders"][dec]["batched"] = {"batch_size": args.batch_size, "seconds": round(seconds, 2),
                                                     "cpu_seconds": round(cpu_seconds, 2),
                                                     "x_realtime": round(audio_s / seconds, 2),
                                                     "wer": round(score(refs, hyps)["wer"], 4)}
        if fw_model is not None:
            for label, opts in (("faster_whisper_int8", {}), ("faster_whisper_int8_no_fallback", {"temperature": 0.0})):
                texts, seconds, cpu_seconds = _faster_whisper(fw_model, waves, **opts)
                entry[label] = {"wer": round(score(refs, texts)["wer"], 4), "total_s_per_utt": _mean(seconds),
                                "total_cpu_s_per_utt": _mean(cpu_seconds),
                                "x_realtime": round(audio_s / sum(seconds), 2),
                                "x_realtime_cpu": round(audio_s / sum(cpu_seconds), 2)}
        report["sets"][name] = entry
        line = "  ".join(f"{dec} WER {d['wer']:.4f} dec {d['decode_s_per_utt']:.3f}s"
                         for dec, d in entry["decoders"].items())
        print(f"{name:18s} enc {entry['encode_s_per_utt']:.3f}s  {line}", flush=True)

    report["gate_tolerance"] = GATE_TOLERANCE
    report["gate_sets"] = [name for name in GATE_SETS if name in report["sets"]]
    report["gates"] = {dec: all(report["sets"][name]["decoders"][dec]["gate_pass"] for name in report["gate_sets"])
                       for dec in foundations if dec != "python"}
    report["gates_all_sets"] = {dec: all(s["decoders"][dec]["gate_pass"] for s in report["sets"].values())
                                for dec in foundations if dec != "python"}
    report["run_seconds"] = round(time.perf_counter() - t_run, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    headline: dict = {"gates": report["gates"], "gates_all_sets": report["gates_all_sets"]}
    for name, entry in report["sets"].items():
        for dec, d in entry["decoders"].items():
            headline[f"{name}_wer_{dec}"] = d["wer"]
            headline[f"{name}_decode_cpu_s_{dec}"] = d["decode_cpu_s_per_utt"]
            headline[f"{name}_total_cpu_s_{dec}"] = d["total_cpu_s_per_utt"]
            if "tokens_identical" in d:
                headline[f"{name}_tokens_identical_{dec}"] = f"{d['tokens_identical']}/{entry['utterances']}"
        if "faster_whisper_int8" in entry:
            headline[f"{name}_total_cpu_s_faster_whisper"] = entry["faster_whisper_int8"]["total_cpu_s_per_utt"]
            headline[f"{name}_wer_faster_whisper"] = entry["faster_whisper_int8"]["wer"]
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
