"""Decoding cost and WER, greedy against beam search, on one voice: the base as served (30-s window) and the
product's linear head (head context), the same head decoded both ways, batches as ``hra.inference.transcribe``.

    python -m hra.bench.decoding_cost [--voice espeak-pt-br] [--beams 1,5] [--threads 1]

Needs the voice in ``corpus/`` (``python -m hra.corpus build --out corpus --voices V --train 50 --eval 40``).
The head trains once (the product's recipe, without a time limit, so that the machine's speed does not change it).
Last line: one JSON object (seconds of decoding and WER per system and beam).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hra.bench.foundation.data import load_voice
from hra.bench.foundation.scoring import score
from hra.bench.paths import CORPUS
from hra.foundation import load_foundation
from hra.inference import SAMPLE_RATE, transcribe
from hra.training.head import HeadTrainingOptions, train_head


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voice", default="espeak-pt-br")
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--train", type=int, default=50, help="enrollment utterances for the head")
    p.add_argument("--eval", type=int, default=40, help="held-out utterances decoded")
    p.add_argument("--beams", default="1,5", help="beam sizes to compare (1: greedy)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    beams = [int(b) for b in args.beams.split(",") if b]
    if not beams or min(beams) < 1:
        p.error(f"--beams wants sizes >= 1, got {args.beams!r}")
    torch.set_num_threads(args.threads)

    data = load_voice(args.corpus, args.voice, args.train, args.eval)
    waves, refs = [w for w, _ in data.eval], [t for _, t in data.eval]
    result: dict = {"voice": args.voice, "utterances": len(waves), "threads": args.threads,
                    "audio_seconds": round(sum(w.numel() for w in waves) / SAMPLE_RATE, 1)}
    head = None
    for beam in beams:
        foundation = load_foundation(beam_size=beam)
        if head is None:  # decoding is not in the fingerprint: one head serves every beam size
            head = train_head(foundation, data.train, HeadTrainingOptions(max_seconds=1e9)).head
        transcribe(foundation, waves[:2])  # warm-up, not timed
        transcribe(foundation, waves[:2], [head] * 2)
        for kind, heads in (("base", None), ("linear_head", [head] * len(waves))):
            start = time.perf_counter()
            hyps = transcribe(foundation, waves, heads)
            seconds = time.perf_counter() - start
            wer = score(refs, hyps)["wer"]
            result[f"{kind}_beam{beam}"] = {"seconds": round(seconds, 2), "wer": round(wer, 4)}
            print(f"{kind:12s} beam {beam}: {seconds:6.1f} s, WER {wer:.3f}", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
