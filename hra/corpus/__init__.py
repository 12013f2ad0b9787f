"""Synthetic speech corpus: voice catalog, licensed sentences, deterministic resumable builder, base-WER survey.

Modules: ``voices`` (the catalog and its groups), ``text`` (sentences and their assignment), ``synth`` (one
utterance: engine, sox, noise, FLAC), ``build`` (plan + parallel build + manifest), ``survey`` (base WER per voice),
``fixtures`` (test fixtures). Command line: ``python -m hra.corpus --help``. Needs the Debian packages espeak-ng,
flite, festival, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts and sox (libsox-fmt-all).
"""

from hra.corpus.build import BuildOptions, BuildReport, PlannedUtterance, build_corpus, plan_corpus, plan_voice
from hra.corpus.voices import GROUPS, VOICES, Voice, get_voice, select_voices, voices_in_group

__all__ = [
    "GROUPS", "VOICES", "BuildOptions", "BuildReport", "PlannedUtterance", "Voice", "build_corpus", "get_voice",
    "plan_corpus", "plan_voice", "select_voices", "voices_in_group",
]
