"""The catalog of synthetic voices, with stable names and fixed groups.

A voice is one text-to-speech engine voice (espeak-ng, flite, festival) with its engine settings, then a chain of
sox effects and optional seeded noise. Kinds:

- ``english``: espeak-ng's English variants (US, British, Scottish, Caribbean, ...) with pitch/rate/voice-quality
  variants, flite and festival English voices;
- ``accented``: espeak-ng voices of other languages reading English text with their own letter-to-sound rules.
  Only Latin-script languages: espeak-ng reads Latin text with its English rules when the voice's language is
  written in another script (ru, el, hi, ...), which gives an English voice, not an accent;
- ``atypical``: sox transforms standing in for atypical speech (slow and halting, tremor, hoarse or breathy,
  whispered, band-limited, reverberant, noisy) on top of a base voice.

Groups (disjoint, fixed once for good: changing them invalidates the shared controller and every benchmark):

- ``standard``: plain US-English voices, used only to measure the base model ("voices the base handles");
- ``controller``: voices that each get a head while the shared controller is trained;
- ``new_speaker``: never used for any training; they play the users in benchmarks and tests. No controller voice
  is an espeak-ng voice of the same language as an accented new speaker, so a new speaker's accent is new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

Engine = Literal["espeak-ng", "flite", "festival"]
Group = Literal["standard", "controller", "new_speaker"]
Kind = Literal["english", "accented", "atypical"]
GROUPS: tuple[Group, ...] = ("standard", "controller", "new_speaker")

ENGINE_LICENCE: dict[str, str] = {
    "espeak-ng": "espeak-ng 1.51 program and voice data: GPL-3.0-or-later (Debian espeak-ng, espeak-ng-data)",
    "flite": "flite 2.2 and its CMU voices: BSD-style CMU licence (Debian flite, libflite1)",
    "festival": "festival 2.5 (X11-style licence) with festvox voices under free CSTR/CMU licences "
                "(Debian festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts)",
}


def stable_seed(name: str) -> int:
    """A 31-bit seed from a voice name, the same on every machine and Python version."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    ``engine_voice``: espeak-ng voice with optional variant (``"pt-br+f3"``), flite voice (``"slt"``) or
    festival voice (``"kal_diphone"``). ``rate``: speaking-rate factor relative to the engine's default.
    ``pitch``: espeak-ng pitch 0-99 (None: the voice's own). ``word_gap_ms``: extra pause between words (espeak-ng).
    ``effects``: sox effects applied in order at the engine's sample rate, each one string (``"tremolo 5 40"``).
    ``noise_snr_db``: white noise added after the effects at this signal-to-noise ratio, seeded by ``seed`` and the
    utterance. ``seed``: drives sentence order and noise.
    """

    name: str
    group: Group
    kind: Kind
    engine: Engine
    engine_voice: str
    accent: str
    rate: float = 1.0
    pitch: int | None = None
    word_gap_ms: int = 0
    effects: tuple[str, ...] = ()
    noise_snr_db: float | None = None
    description: str = ""
    seed: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.seed < 0:
            object.__setattr__(self, "seed", stable_seed(self.name))
        if not self.name or not all(c.isalnum() or c == "-" for c in self.name) or self.name.lower() != self.name:
            raise ValueError(f"voice name must be lowercase letters, digits and '-': {self.name!r}")
        if self.group not in GROUPS:
            raise ValueError(f"unknown group {self.group!r}")
        if not 0.3 <= self.rate <= 3.0:
            raise ValueError(f"rate out of range: {self.rate}")
        if self.pitch is not None and not 0 <= self.pitch <= 99:
            raise ValueError(f"pitch must be 0..99: {self.pitch}")
        if self.engine != "espeak-ng" and (self.pitch is not None or self.word_gap_ms):
            raise ValueError("pitch and word_gap_ms are espeak-ng settings")

    @property
    def language(self) -> str:
        """The engine voice's language (espeak-ng), or ``"en"`` for flite and festival."""
        return self.engine_voice.split("+")[0] if self.engine == "espeak-ng" else "en"

    @property
    def speed(self) -> float:
        """Speaking-rate factor including sox ``tempo``/``speed`` effects (used to bound utterance lengths)."""
        factor = self.rate
        for effect in self.effects:
            parts = effect.split()
            if parts[0] in ("tempo", "speed"):
                factor *= float([p for p in parts[1:] if not p.startswith("-")][0])
        return factor

    @property
    def licence(self) -> str:
        return ENGINE_LICENCE[self.engine]


def _espeak(name: str, group: Group, kind: Kind, voice: str, accent: str, **kw: object) -> Voice:
    return Voice(name=name, group=group, kind=kind, engine="espeak-ng", engine_voice=voice, accent=accent, **kw)


_C: Group = "controller"
_N: Group = "new_speaker"
_S: Group = "standard"

# Sox effect chains for atypical speech (applied at the engine's sample rate, before resampling to 16 kHz).
TREMOR = "tremolo 5.5 45"
TELEPHONE = "sinc 300-3400"
HOARSE = "overdrive 8 20"
ROOM = "reverb 70 50 90"
MUFFLED = "lowpass 1800"
NASAL = "equalizer 1200 1q 10"

VOICES: tuple[Voice, ...] = (
    # --- standard US English: only for measuring the base model --------------------------------------------
    _espeak("espeak-en-us", _S, "english", "en-us", "en-US", description="espeak-ng American English"),
    Voice("flite-kal", _S, "english", "flite", "kal", "en-US", description="flite kal (8 kHz diphone, US male)"),
    Voice("flite-slt", _S, "english", "flite", "slt", "en-US", description="flite slt (US female)"),
    Voice("festival-kal", _S, "english", "festival", "kal_diphone", "en-US",
          description="festival kal_diphone (US male)"),
    # --- English variants -------------------------------------------------------------------------------------
    _espeak("espeak-en-gb", _C, "english", "en-gb", "en-GB"),
    _espeak("espeak-en-rp", _C, "english", "en-gb-x-rp", "en-GB-x-rp", description="Received Pronunciation"),
    _espeak("espeak-en-scotland", _C, "english", "en-gb-scotland", "en-GB-scotland"),
    _espeak("espeak-en-lancaster", _N, "english", "en-gb-x-gbclan", "en-GB-x-gbclan"),
    _espeak("espeak-en-wmids", _C, "english", "en-gb-x-gbcwmd", "en-GB-x-gbcwmd", description="West Midlands"),
    _espeak("espeak-en-nyc", _C, "english", "en-us-nyc", "en-US-nyc", description="New York City"),
    _espeak("espeak-en-us-f3", _C, "english", "en-us+f3", "en-US", description="female variant f3"),
    _espeak("espeak-en-us-m3-slow", _C, "english", "en-us+m3", "en-US", rate=0.75),
    _espeak("espeak-en-gb-f2-fast", _C, "english", "en-gb+f2", "en-GB", rate=1.3),
    _espeak("espeak-en-us-klatt", _C, "english", "en-us+klatt2", "en-US", description="Klatt synthesizer variant"),
    _espeak("espeak-en-rp-f4-high", _C, "english", "en-gb-x-rp+f4", "en-GB-x-rp", pitch=80),
    _espeak("espeak-en-nyc-m7-low", _C, "english", "en-us-nyc+m7", "en-US-nyc", pitch=15),
    Voice("flite-rms", _C, "english", "flite", "rms", "en-US", description="flite rms (US male)"),
    Voice("festival-slt", _C, "english", "festival", "cmu_us_slt_arctic_hts", "en-US",
          description="festival HTS slt (US female)"),
    _espeak("espeak-en-caribbean-f4", _N, "english", "en-029+f4", "en-029", description="Caribbean, female f4"),
    Voice("flite-awb", _N, "english", "flite", "awb", "en-GB-scotland", description="flite awb (Scottish male)"),
    Voice("festival-ked", _N, "english", "festival", "ked_diphone", "en-US",
          description="festival ked_diphone (US male)"),
    # --- accented: other languages' voices reading English ------------------------------------------------------
    _espeak("espeak-de", _C, "accented", "de", "de"),
    _espeak("espeak-de-f3", _C, "accented", "de+f3", "de", rate=0.9),
    _espeak("espeak-fr", _C, "accented", "fr-fr", "fr"),
    _espeak("espeak-fr-f4", _C, "accented", "fr-fr+f4", "fr"),
    _espeak("espeak-es", _C, "accented", "es", "es"),
    _espeak("espeak-es-m2-fast", _C, "accented", "es+m2", "es", rate=1.2),
    _espeak("espeak-nl", _C, "accented", "nl", "nl"),
    _espeak("espeak-sv", _C, "accented", "sv", "sv"),
    _espeak("espeak-fi", _C, "accented", "fi", "fi"),
    _espeak("espeak-da", _N, "accented", "da", "da"),
    _espeak("espeak-nb", _C, "accented", "nb", "nb"),
    _espeak("espeak-hr", _C, "accented", "hr", "hr"),
    _espeak("espeak-sk", _C, "accented", "sk", "sk"),
    _espeak("espeak-sl", _C, "accented", "sl", "sl"),
    _espeak("espeak-lv", _C, "accented", "lv", "lv"),
    _espeak("espeak-lt", _C, "accented", "lt", "lt"),
    _espeak("espeak-et", _C, "accented", "et", "et"),
    _espeak("espeak-ca", _C, "accented", "ca", "ca"),
    _espeak("espeak-af", _C, "accented", "af", "af"),
    _espeak("espeak-eu", _C, "accented", "eu", "eu"),
    _espeak("espeak-sq", _C, "accented", "sq", "sq"),
    _espeak("espeak-ms", _C, "accented", "ms", "ms"),
    _espeak("espeak-cy", _C, "accented", "cy", "cy"),
    _espeak("espeak-pt-br", _N, "accented", "pt-br", "pt-BR", description="Brazilian Portuguese"),
    _espeak("espeak-pt-br-f3", _N, "accented", "pt-br+f3", "pt-BR", description="Brazilian Portuguese, female f3"),
    _espeak("espeak-pl", _N, "accented", "pl", "pl"),
    _espeak("espeak-hu", _N, "accented", "hu", "hu"),
    _espeak("espeak-vi", _N, "accented", "vi", "vi"),
    _espeak("espeak-it", _N, "accented", "it", "it"),
    _espeak("espeak-tr", _N, "accented", "tr", "tr"),
    _espeak("espeak-ro", _N, "accented", "ro", "ro"),
    _espeak("espeak-cs", _N, "accented", "cs", "cs"),
    _espeak("espeak-id", _N, "accented", "id", "id"),
    # --- atypical: transforms of a base voice ----------------------------------------------------------------
    _espeak("atyp-en-gb-slow-tremor", _C, "atypical", "en-gb+m4", "en-GB", rate=0.7, effects=(TREMOR,),
            description="slow speech with a voice tremor"),
    _espeak("atyp-en-rp-halting", _C, "atypical", "en-gb-x-rp", "en-GB-x-rp", rate=0.85, word_gap_ms=250,
            description="halting speech: long pauses between words"),
    _espeak("atyp-en-us-whisper", _C, "atypical", "en-us+whisper", "en-US", description="whispered (espeak-ng)"),
    _espeak("atyp-en-scotland-hoarse", _C, "atypical", "en-gb-scotland+croak", "en-GB-scotland",
            effects=(HOARSE, "pitch -200"), description="hoarse, low voice"),
    _espeak("atyp-de-telephone-noise", _C, "atypical", "de", "de", effects=(TELEPHONE,), noise_snr_db=12.0,
            description="telephone band, noisy line"),
    _espeak("atyp-es-reverb", _C, "atypical", "es+f2", "es", effects=(ROOM,), description="far-field room"),
    _espeak("atyp-nl-nasal-muffled", _C, "atypical", "nl", "nl", effects=(NASAL, MUFFLED),
            description="nasal, muffled"),
    Voice("atyp-flite-rms-slow-low", _C, "atypical", "flite", "rms", "en-US", effects=("pitch -300", "tempo 0.8"),
          description="slow, low-pitched"),
    _espeak("atyp-sv-fast-mumble", _C, "atypical", "sv", "sv", effects=("tempo 1.3", MUFFLED),
            description="fast, mumbled"),
    Voice("atyp-festival-kal-slow-tremor", _N, "atypical", "festival", "kal_diphone", "en-US",
          effects=("tempo 0.75", TREMOR), description="slow speech with a voice tremor"),
    _espeak("atyp-en-us-halting-noise", _N, "atypical", "en-us+m2", "en-US", rate=0.8, word_gap_ms=300,
            noise_snr_db=15.0, description="halting speech in noise"),
    _espeak("atyp-pt-br-hoarse-reverb", _N, "atypical", "pt-br+m3", "pt-BR", effects=(HOARSE, ROOM),
            description="accented, hoarse, far-field"),
    _espeak("atyp-pl-breathy-telephone", _N, "atypical", "pl+whisper", "pl", effects=(TELEPHONE,),
            noise_snr_db=20.0, description="accented, breathy, telephone band"),
)

_BY_NAME: dict[str, Voice] = {v.name: v for v in VOICES}
if len(_BY_NAME) != len(VOICES):
    raise RuntimeError("duplicate voice names in the catalog")


def get_voice(name: str) -> Voice:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown voice {name!r}; `python -m hra.corpus voices` lists them") from None


def voices_in_group(group: Group) -> tuple[Voice, ...]:
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; one of {', '.join(GROUPS)}")
    return tuple(v for v in VOICES if v.group == group)


def select_voices(spec: str) -> tuple[Voice, ...]:
    """Voices named by a comma-separated list of group names (or ``all``) and voice names, in catalog order."""
    wanted: set[str] = set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "all":
            wanted.update(_BY_NAME)
        elif item in GROUPS:
            wanted.update(v.name for v in voices_in_group(item))  # type: ignore[arg-type]
        else:
            wanted.add(get_voice(item).name)
    if not wanted:
        raise ValueError("no voices selected")
    return tuple(v for v in VOICES if v.name in wanted)
