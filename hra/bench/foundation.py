"""Foundation benchmark: do per-speaker HRA heads fix voices the frozen Whisper tiny.en fails, and at what cost?

    python -m hra.bench.foundation [--voices new_speaker] [--sizes 20,50,100] [--quick] [--corpus corpus]
    make bench-foundation

For every new-speaker voice (never used to train the controller) and enrollment size (the first N train
utterances of the voice; held-out: its first ``--eval`` eval utterances, 40 by default), each system is trained
once (seed 0) and scored on the held-out utterances:

- ``base``: the base model exactly as the product serves it (``hra.inference.transcribe`` with no head: the
  foundation's base serving context, Whisper's 30-s window, and guarded decoding); every trained system trains
  and runs in the foundation's head context (``foundation.backbone``), as the product serves heads;
- ``linear_zero`` / ``linear_prior`` / ``ffn_zero`` / ``ffn_prior``: HRA heads from ``train_head`` (what the
  train worker runs), started at zero or at the population prior shipped with the controller;
- ``houlsby`` / ``lora`` / ``full_ft``: the baselines of ``hra.baselines`` (bottleneck adapters after every
  encoder block, LoRA on the encoder's attention and FFN projections, the whole encoder fine-tuned), trained by
  the same loop with the same enrollment data, held-out slice, schedule and budget as the heads (60 reference
  seconds: wall-clock seconds scaled by this machine's measured speed against the reference machine's,
  ``hra.bench.speed``, so that runs on different machines compare);
- ``hra_u0``: a linear head on a controller without recurrence: trained by the shipped controller's own command
  with u = 0 fixed (in ``<work-dir>/controller_u0``, trained there when missing, ~25 min; with ``--quick`` only
  if already there or ``--train-variant-controllers yes``), else the trained controller with u set to 0;
  ``hra_random``: a linear head on an untrained, random controller;
- ``hra_decoder``: a linear head on a controller that also runs across the decoder layers, trained by the
  shipped command with ``include_decoder`` (in ``<work-dir>/controller_decoder``, like u = 0; skipped when
  there is none).

The product serves a head only if its promotion gate (``app.services.gate``, the shipped settings) finds it
better than the base on the speaker's evaluation speech; here the gate decides on the ``--gate`` eval utterances
after the held-out ones (20 by default), so "served" numbers (a rejected head leaves the speaker on the base) are
measured on speech the gate never saw.

WER is ``hra.text``'s (Whisper's English normalizer, jiwer): every error counts, loops included (``wer_capped``
caps each utterance's errors at its reference words, for reading, not for the targets). A voice "fails" when the
served base's capped WER exceeds 0.5. Voices the base handles: the ``standard`` group (base WER, and linear/FFN
heads at 50 utterances, which must not make them worse). Real speech: the served base against faster-whisper
(beam 5, int8, the same wheel) on tests/fixtures/real_speech, in the same run.

The headline's "linear" and "FFN" heads are the heads as the product trains them (``HeadTrainingOptions``'s
default init: "auto" = the shipped population prior when it fits the foundation, else zero); both inits are
reported. The controller ablations compare zero-started linear heads (``linear_zero`` vs ``hra_u0``/``hra_random``).

``--quick`` runs four new-speaker voices (failing in the corpus survey) at 50 utterances with every system, and
the product's linear head at 20 and 100. Every finished (voice, size, system) is appended to
``<work-dir>/results.jsonl`` under a key that covers what it depends on (backbone, controller, training recipe,
system configuration), so an interrupted run resumes where it stopped, and a larger run reuses a smaller one's
measurements. Output: a table,
``benchmarks/results/foundation.json`` (``foundation_quick.json`` with ``--quick``), and, as the last line, one
JSON object with the headline numbers (fractions; seconds).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import soundfile as sf
import torch

from hra.baselines import AdapterConfig, DEFAULT_LEARNING_RATES, train_adapter, transcribe_adapted
from hra.baselines.adapters import tensors_to_bytes
from hra.bench.speed import REFERENCE_MACHINE, REFERENCE_STEP_SECONDS, speed_factor
from hra.errors import FoundationMismatch
from hra.foundation import DEFAULT_CONTROLLER_PATH, Foundation, load_foundation
from hra.hra.artifacts import load_controller
from hra.hra.controller import Controller
from hra.inference import transcribe
from hra.text import word_errors
from hra.training.controller import cpu_name
from hra.training.head import HeadTrainingOptions, load_prior_head, train_head

ROOT = Path(__file__).resolve().parents[2]
REAL_SPEECH = ROOT / "tests" / "fixtures" / "real_speech"
RESULTS_DIR = ROOT / "benchmarks" / "results"
COMMITTED_CONTROLLERS = RESULTS_DIR / "controllers"  # the variant systems' controllers, committed with their results
FAIL_THRESHOLD = 0.5  # served base's capped WER above which a voice "fails"
HEADLINE_SIZE = 50
STANDARD_SIZE = 50
QUICK_VOICES = ("espeak-pt-br", "espeak-hu", "espeak-en-lancaster", "atyp-pl-breathy-telephone")


@dataclass(frozen=True)
class System:
    """One way to adapt to a speaker. ``head_type`` for HRA heads, ``adapter`` for baselines; ``controller``:
    "trained", "random" (untrained) or a variant of ``VARIANT_CONTROLLERS`` ("u0": recurrence removed,
    "decoder": across the decoder layers too)."""

    name: str
    family: str  # "hra" | "baseline" | "ablation"
    head_type: str | None = None
    init: str = "zero"
    adapter: str | None = None
    controller: str = "trained"
    description: str = ""


SYSTEMS: tuple[System, ...] = (
    System("linear_zero", "hra", head_type="linear", description="HRA linear head, zero init"),
    System("linear_prior", "hra", head_type="linear", init="prior", description="HRA linear head, prior init"),
    System("ffn_zero", "hra", head_type="ffn", description="HRA FFN head, zero init"),
    System("ffn_prior", "hra", head_type="ffn", init="prior", description="HRA FFN head, prior init"),
    System("houlsby", "baseline", adapter="houlsby", description="bottleneck adapters after each encoder block"),
    System("lora", "baseline", adapter="lora", description="LoRA on encoder attention q/k/v/out and FFN"),
    System("full_ft", "baseline", adapter="full_ft", description="full fine-tuning of the encoder"),
    System("hra_u0", "ablation", head_type="linear", controller="u0", description="linear head, controller u = 0"),
    System("hra_random", "ablation", head_type="linear", controller="random",
           description="linear head, untrained random controller"),
    System("hra_decoder", "variant", head_type="linear", controller="decoder",
           description="linear head, controller across encoder and decoder layers"),
)
# Controllers trained by the shipped controller's own command with these options changed (see find_variant_controller).
VARIANT_CONTROLLERS: dict[str, dict] = {
    "u0": {"u_init": 0.0, "train_u": False},
    "decoder": {"include_decoder": True},
}
SYSTEMS_BY_NAME = {s.name: s for s in SYSTEMS}
PRODUCT_HEADS = ("linear", "ffn")  # aliases: the heads as the product trains them (see product_systems)


@dataclass(frozen=True)
class BenchOptions:
    """What one benchmark run covers, and the shared training recipe (``training``: the head's options; every
    system gets its budget and split; baselines their own learning rate)."""

    voices: tuple[str, ...]
    standard_voices: tuple[str, ...]
    sizes: tuple[int, ...]
    systems_by_size: dict[int, tuple[str, ...]]
    n_eval: int = 40
    n_gate: int = 20  # eval utterances after the held-out ones: the product's promotion gate decides on them
    regate: bool = False  # measure again what the store holds without a gate decision
    corpus: Path = ROOT / "corpus"
    work_dir: Path = ROOT / "var" / "bench_foundation"
    out: Path = RESULTS_DIR / "foundation.json"
    controller: Path | None = None
    variant_controllers: dict[str, Path] = field(default_factory=dict)  # name -> controller safetensors
    train_variant_controllers: bool = False
    real_speech: bool = True
    quick: bool = False
    import_results: tuple[Path, ...] = ()
    measure: bool = True
    training: HeadTrainingOptions = field(default_factory=HeadTrainingOptions)
    houlsby_bottleneck: int = 64
    lora_rank: int = 8
    lora_alpha: float = 16.0
    threads: int = 1
    # Budgets are in reference seconds (``hra.bench.speed``): every training gets ``training.max_seconds`` x this
    # factor of wall-clock time. None: measured at the start of a run.
    speed_factor: float | None = None
    beam_size: int | None = None  # decoding's beam for every system and the base (None: the product's; 1: greedy)

    def adapter_config(self, kind: str) -> AdapterConfig:
        return AdapterConfig(kind, bottleneck=self.houlsby_bottleneck, rank=self.lora_rank, alpha=self.lora_alpha)


# ---- data ------------------------------------------------------------------------------------------------------


@dataclass
class VoiceData:
    voice: str
    group: str
    kind: str
    train: list[tuple[torch.Tensor, str]]
    eval: list[tuple[torch.Tensor, str]]
    eval_ids: list[str]
    gate: list[tuple[torch.Tensor, str]] = field(default_factory=list)


def read_wave(path: Path) -> torch.Tensor:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != 16000:
        raise ValueError(f"{path}: {rate} Hz, expected 16000")
    return torch.from_numpy(data.mean(axis=1).copy())


def ensure_corpus(corpus: Path, voices: Sequence[str], n_train: int, n_eval: int, jobs: int) -> None:
    """Synthesize what is missing (the corpus builder is resumable and extends smaller builds)."""
    from hra.corpus import BuildOptions, build_corpus, get_voice
    from hra.corpus.build import MANIFEST, read_manifest

    rows = read_manifest(corpus / MANIFEST)
    have: dict[tuple[str, str], int] = {}
    for r in rows:
        if (corpus / str(r["path"])).is_file():
            key = (str(r["voice"]), str(r["split"]))
            have[key] = have.get(key, 0) + 1
    missing = [v for v in voices if have.get((v, "train"), 0) < n_train or have.get((v, "eval"), 0) < n_eval]
    if missing:
        print(f"building corpus for {len(missing)} voices ({n_train} train + {n_eval} eval each) in {corpus}",
              flush=True)
        build_corpus(corpus, [get_voice(v) for v in missing], BuildOptions(n_train=n_train, n_eval=n_eval, jobs=jobs),
                     progress=False)


def load_voice(corpus: Path, voice: str, n_train: int, n_eval: int, n_gate: int = 0) -> VoiceData:
    """The first ``n_train`` train utterances; the first ``n_eval`` eval utterances (held out, scored) and the
    ``n_gate`` after them (the gate's; a larger corpus build extends the eval list without changing its start)."""
    from hra.corpus import get_voice
    from hra.corpus.build import MANIFEST, read_manifest

    rows = [r for r in read_manifest(corpus / MANIFEST) if r["voice"] == voice]
    train = sorted((r for r in rows if r["split"] == "train"), key=lambda r: str(r["id"]))[:n_train]
    held = sorted((r for r in rows if r["split"] == "eval"), key=lambda r: str(r["id"]))[:n_eval + n_gate]
    if len(train) < n_train or len(held) < n_eval + n_gate:
        raise ValueError(f"{voice}: corpus has {len(train)} train / {len(held)} eval, "
                         f"needs {n_train} / {n_eval + n_gate}")
    info = get_voice(voice)

    def waves(selected: list[dict]) -> list[tuple[torch.Tensor, str]]:
        return [(read_wave(corpus / str(r["path"])), str(r["text"])) for r in selected]

    return VoiceData(
        voice=voice, group=info.group, kind=info.kind, train=waves(train), eval=waves(held[:n_eval]),
        eval_ids=[str(r["id"]) for r in held[:n_eval]], gate=waves(held[n_eval:]),
    )


def utterance_errors(references: Sequence[str], hypotheses: Sequence[str]) -> list[list[int]]:
    """[errors, reference words] per utterance."""
    return [list(word_errors(ref, hyp)) for ref, hyp in zip(references, hypotheses, strict=True)]


def product_gate_config():
    """The evaluation gate's settings as the product ships them (``app.settings`` defaults, not this shell's
    environment)."""
    from app.services.gate import GateConfig
    from app.settings import Settings

    fields = Settings.model_fields
    return GateConfig(
        min_eval_words=fields["gate_min_eval_words"].default,
        min_relative_improvement=fields["gate_min_relative_improvement"].default,
        confidence=fields["gate_confidence"].default,
        bootstrap_samples=fields["gate_bootstrap_samples"].default,
    )


def gate_decision(base_errors: Sequence[Sequence[int]], candidate_errors: Sequence[Sequence[int]]) -> dict:
    """The product's promotion gate (``app.services.gate``) on the gate utterances, against the served base."""
    from app.services.gate import UtteranceScore, evaluate_gate

    scores = [UtteranceScore(words=n, reference_errors=b, candidate_errors=c)
              for (b, n), (c, _) in zip(base_errors, candidate_errors, strict=True)]
    result = evaluate_gate(scores, product_gate_config())
    return {"decision": result.decision.value, "confidence": result.confidence, "words": result.words,
            "base_wer": result.reference_wer, "candidate_wer": result.candidate_wer, "reason": result.reason}


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict:
    errors = capped = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        e, n = word_errors(ref, hyp)
        errors, capped, words = errors + e, capped + min(e, n), words + n
    return {"wer": errors / words, "wer_capped": capped / words, "errors": errors, "words": words}


# ---- resumable results -----------------------------------------------------------------------------------------


class ResultStore:
    """Append-only JSONL of finished measurements, keyed so that a changed setup is measured again."""

    def __init__(self, path: Path, imports: Sequence[Path] = ()) -> None:
        """``imports``: other runs' results.jsonl (another machine, another process, a committed file); what they
        hold and this store lacks, or holds only without a gate decision, is copied into it, so runs over voice
        subsets merge into one."""
        self.path = path
        self.records: dict[str, dict] = {}
        if path.exists():
            self.records.update(self._read(path))
        for other in imports:
            for key, record in self._read(Path(other)).items():
                mine = self.records.get(key)
                # a measurement with a gate decision supersedes one of the same key without (see --regate)
                if mine is None or ("gate" in record and "gate" not in mine):
                    self.put(record)

    @staticmethod
    def _read(path: Path) -> dict[str, dict]:
        records = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                records[record["key"]] = record
        return records

    @staticmethod
    def key(**parts: object) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, record: dict) -> dict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.records[record["key"]] = record
        return record


# ---- foundations for the systems ------------------------------------------------------------------------------


@dataclass
class Foundations:
    trained: Foundation
    random: Foundation
    variants: dict[str, Foundation | None]  # VARIANT_CONTROLLERS' names -> foundation (None: not available)
    controller_kind: str  # "trained" or "random (no trained controller found)"
    variant_kinds: dict[str, str]

    def for_system(self, system: System) -> Foundation | None:
        if system.controller == "trained":
            return self.trained
        if system.controller == "random":
            return self.random
        return self.variants[system.controller]


def build_foundations(options: BenchOptions) -> Foundations:
    """The product's foundation (``load_foundation``: heads in its head context, the base in its serving context)
    and the two ablations' foundations on the same backbone views."""
    path = options.controller or DEFAULT_CONTROLLER_PATH
    if Path(path).is_file():
        trained = load_foundation(path, beam_size=options.beam_size)
        controller_kind = f"trained ({Path(path).name})"
    else:
        from hra.backbone.decoding import DecodingOptions
        from hra.backbone.whisper import BASE_SERVING_CONTEXT, BackboneOptions, load_whisper_tiny_en
        from hra.hra.controller import ControllerConfig

        print(f"WARNING: no controller at {path}; using a random controller (development only)", flush=True)
        backbone = load_whisper_tiny_en(options=BackboneOptions(decoding=DecodingOptions.with_beam(options.beam_size)))
        config = ControllerConfig(d_model=backbone.d_model, n_layers=backbone.n_encoder_layers)
        trained = Foundation.build(backbone, _random_controller(config), controller_source="random (development)",
                                   base_backbone=backbone.with_context(BASE_SERVING_CONTEXT))
        controller_kind = "random (no trained controller found)"

    def variant(controller: Controller, source: str) -> Foundation:
        return Foundation.build(trained.backbone, controller, controller_source=source,
                                base_backbone=trained.base_backbone)

    random_foundation = variant(_random_controller(trained.controller.config), "random (ablation)")
    variants: dict[str, Foundation | None] = {}
    kinds: dict[str, str] = {}
    for name, overrides in VARIANT_CONTROLLERS.items():
        path = options.variant_controllers.get(name) or find_variant_controller(options, name, trained,
                                                                                controller_kind)
        if path is not None:
            controller = load_controller(path)
            wanted = {k: v for k, v in overrides.items() if k in controller.config.to_dict()}
            if name == "u0" and float(controller.u.abs().max()) != 0.0:
                raise ValueError(f"{path} has u != 0: not a controller without recurrence")
            if any(getattr(controller.config, k) != v for k, v in wanted.items() if k != "u_init"):
                raise ValueError(f"{path} is not a {name!r} controller ({overrides})")
            kinds[name] = f"controller trained by the shipped controller's recipe with {overrides} ({path})"
            variants[name] = variant(controller, kinds[name])
        elif name == "u0":
            controller = copy.deepcopy(trained.controller)
            with torch.no_grad():
                controller.u.zero_()
            kinds[name] = "trained controller with u set to 0"
            variants[name] = variant(controller, kinds[name])
        else:
            kinds[name] = "not available (train it with --train-variant-controllers yes)"
            variants[name] = None
    return Foundations(trained, random_foundation, variants, controller_kind, kinds)


def variant_controller_dir(options: BenchOptions, name: str) -> Path:
    return options.work_dir / f"controller_{name}"


def find_variant_controller(options: BenchOptions, name: str, trained: Foundation, controller_kind: str) -> Path | None:
    """A controller trained by the shipped controller's own command (its ``controller.json``) with
    ``VARIANT_CONTROLLERS[name]``'s options: the one committed in ``benchmarks/results/controllers/<name>`` (so
    that the committed measurements can be summarized, and extended, on a fresh checkout), else the one in
    ``<work-dir>/controller_<name>`` (resumable). Used while it was trained on the foundation's backbone; trained
    when missing if ``train_variant_controllers``; else None."""
    out = variant_controller_dir(options, name) / "out"
    for folder in (COMMITTED_CONTROLLERS / name, out):
        record_path = folder / "controller.json"
        if record_path.is_file() and (folder / "controller.safetensors").is_file():
            record = json.loads(record_path.read_text())
            if record.get("backbone", {}).get("fingerprint") == trained.backbone.fingerprint:
                return folder / "controller.safetensors"
    if not options.train_variant_controllers or not controller_kind.startswith("trained"):
        return None
    from hra.training.controller import main as train_controller

    argv = variant_controller_argv(Path(options.controller or DEFAULT_CONTROLLER_PATH).with_suffix(".json"),
                                   VARIANT_CONTROLLERS[name], out, variant_controller_dir(options, name) / "work")
    print(f"training the {name!r} controller: python -m hra.training.controller {shlex.join(argv)}", flush=True)
    train_controller(argv)
    return out / "controller.safetensors"


def variant_controller_argv(shipped_record: Path, overrides: dict, out: Path, work_dir: Path) -> list[str]:
    """The shipped controller's command line, with ``overrides`` in its options and this benchmark's folders."""
    record = json.loads(shipped_record.read_text())
    argv = shlex.split(record["command"])
    if argv[:3] == ["python", "-m", "hra.training.controller"]:
        argv = argv[3:]
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--out", "--work-dir", "--options", "--resume"):
            skip = arg != "--resume"
            continue
        kept.append(arg)
    recipe = dict(record.get("options", {}))
    recipe.update(overrides)
    return [*kept, "--out", str(out), "--work-dir", str(work_dir), "--options", json.dumps(recipe), "--resume"]


def product_systems(foundation: Foundation) -> dict[str, str]:
    """The systems the product trains for a speaker: ``HeadTrainingOptions().init`` ("auto": the shipped prior
    when it fits this foundation, else zero) -> {"linear": "linear_prior" | "linear_zero", "ffn": ...}."""
    init = HeadTrainingOptions().init
    out = {}
    for head_type in ("linear", "ffn"):
        chosen = init
        if init == "auto":
            try:
                load_prior_head(foundation, head_type)
                chosen = "prior"
            except (FileNotFoundError, FoundationMismatch, ValueError):
                chosen = "zero"
        out[head_type] = f"{head_type}_{chosen}"
    return out


def _random_controller(config) -> Controller:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        return Controller(config)


# ---- measurements ----------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, options: BenchOptions, foundations: Foundations) -> None:
        self.options = options
        self.f = foundations
        self.store = ResultStore(options.work_dir / "results.jsonl", options.import_results)
        self.trainings: list[float] = []
        self.log: Callable[[str], None] = print

    @property
    def speed_factor(self) -> float:
        """The given factor, else measured once, when the first training needs it (a run that finds everything
        in its store measures nothing)."""
        if self.options.speed_factor is None:
            factor, step_seconds = speed_factor(self.f.trained)
            self.options = replace(self.options, speed_factor=round(factor, 3))
            nominal = self.options.training.max_seconds
            self.log(f"reference step {step_seconds:.2f} s here, {REFERENCE_STEP_SECONDS:.2f} s on the reference "
                     f"machine: speed factor {self.options.speed_factor:.2f}, training budget "
                     f"{nominal * self.options.speed_factor:.0f} s of wall clock ({nominal:.0f} reference seconds)")
        return self.options.speed_factor

    @property
    def training(self) -> HeadTrainingOptions:
        """What trainings get here: the nominal budget (in the measurement keys) scaled to this machine's speed."""
        return replace(self.options.training, max_seconds=self.options.training.max_seconds * self.speed_factor)

    def _key(self, kind: str, system: System | None = None, **parts: object) -> str:
        """A measurement's key covers exactly what it depends on: the base and real speech only the backbone
        (with its context and decoding) and the held-out set; a system also the controller it runs on, the
        training recipe and its own configuration. A new controller re-measures the systems, not the base."""
        f = self.f
        backbone = f.trained.backbone if system is not None else f.trained.serving_base
        decoding = getattr(getattr(backbone, "options", None), "decoding", None)  # the context is in the fingerprint
        key: dict[str, object] = {"kind": kind, "backbone": backbone.fingerprint,
                                  "decoding": decoding.result_identity() if decoding is not None else repr(None),
                                  **parts}
        if kind != "real_speech":
            key["n_eval"] = self.options.n_eval
        if system is not None:
            key["training"] = asdict(self.options.training)
            key["system"] = asdict(system)
            if system.adapter is not None:
                key["adapter"] = {**self.options.adapter_config(system.adapter).to_dict(), "init": "seeded"}
                key["learning_rate"] = DEFAULT_LEARNING_RATES[system.adapter]
            else:
                foundation = f.for_system(system)
                key["foundation"] = foundation.fingerprint if foundation is not None else None
        return ResultStore.key(**key)

    def base(self, data: VoiceData) -> dict:
        key = self._key("base", voice=data.voice)
        if (hit := self.store.get(key)) is not None:
            return hit
        start = time.monotonic()
        hyps = transcribe(self.f.trained, [w for w, _ in data.eval])
        record = {"key": key, "kind": "base", "voice": data.voice, "group": data.group, "voice_kind": data.kind,
                  "size": 0, "system": "base", **score([t for _, t in data.eval], hyps),
                  "eval_seconds": round(time.monotonic() - start, 2), "hypotheses": hyps}
        return self.store.put(record)

    def base_gate(self, data: VoiceData) -> dict:
        """The served base on the gate utterances (what a speaker's first head is gated against)."""
        key = self._key("base_gate", voice=data.voice, n_gate=len(data.gate))
        if (hit := self.store.get(key)) is not None:
            return hit
        hyps = transcribe(self.f.trained, [w for w, _ in data.gate])
        record = {"key": key, "kind": "base_gate", "voice": data.voice, "group": data.group,
                  "utterance_errors": utterance_errors([t for _, t in data.gate], hyps), "hypotheses": hyps}
        return self.store.put(record)

    def system(self, data: VoiceData, size: int, system: System) -> dict:
        key = self._key("system", system, voice=data.voice, size=size)
        # The gate does not change what is measured, so it is not in the key; --regate measures again what was
        # measured without one.
        regate = self.options.regate and self.options.measure and data.gate
        if (hit := self.store.get(key)) is not None and not (regate and "gate" not in hit):
            return hit
        enrollment = data.train[:size]
        waves = [w for w, _ in data.eval]
        refs = [t for _, t in data.eval]
        record = {"key": key, "kind": "system", "voice": data.voice, "group": data.group, "voice_kind": data.kind,
                  "size": size, "system": system.name, "family": system.family}
        if not self.options.measure:
            return {**record, "skipped": "not measured (--summarize-only)"}
        if system.head_type is not None:
            foundation = self.f.for_system(system)
            if foundation is None:
                why = self.f.variant_kinds[system.controller]
                return {**record, "skipped": f"no {system.controller!r} controller: {why}"}
            training = replace(self.training, head_type=system.head_type, init=system.init)
            try:
                result = train_head(foundation, enrollment, training)
            except (FileNotFoundError, FoundationMismatch) as exc:  # no population prior for this controller
                return {**record, "skipped": str(exc)}
            model, metrics = result.head, result.metrics
            run_model = lambda ws: transcribe(foundation, ws, [model] * len(ws))  # noqa: E731
            start = time.monotonic()
            hyps = run_model(waves)
            tensors = dict(model.state_dict())
        else:
            result = train_adapter(self.f.trained.backbone, enrollment, self.options.adapter_config(system.adapter),
                                   self.training)
            model, metrics = result.adapter, result.metrics
            run_model = lambda ws: transcribe_adapted(self.f.trained.backbone, model, ws)  # noqa: E731
            start = time.monotonic()
            hyps = run_model(waves)
            tensors = model.trainable_tensors()
        eval_seconds = time.monotonic() - start
        if data.gate:
            gate_refs = [t for _, t in data.gate]
            candidate = utterance_errors(gate_refs, run_model([w for w, _ in data.gate]))
            record["gate"] = gate_decision(self.base_gate(data)["utterance_errors"], candidate)
        self.trainings.append(metrics["seconds"])
        record.update(score(refs, hyps))
        record.update({
            "parameters": metrics["parameters"],
            "stored_bytes": len(tensors_to_bytes(tensors)),
            "train_seconds": metrics["seconds"],
            "speed_factor": self.speed_factor,
            "budget_seconds": round(self.training.max_seconds, 2),
            "eval_seconds": round(eval_seconds, 2),
            "epochs": metrics["epochs"], "steps": metrics["steps"], "best_epoch": metrics["best_epoch"],
            "stopped_by": metrics["stopped_by"], "holdout_loss": metrics["holdout_loss"],
            "holdout_loss_initial": metrics["holdout_loss_initial"],
            "learning_rate": metrics.get("learning_rate", metrics.get("options", {}).get("learning_rate")),
            "hypotheses": hyps,
        })
        return self.store.put(record)

    def real_speech(self) -> dict:
        key = self._key("real_speech")
        if (hit := self.store.get(key)) is not None:
            return hit
        from faster_whisper import WhisperModel

        from hra.backbone.whisper import wheel_model_dir

        rows = [json.loads(line) for line in (REAL_SPEECH / "manifest.jsonl").read_text().splitlines() if line.strip()]
        waves = [read_wave(REAL_SPEECH / r["file"]) for r in rows]
        refs = [r["transcript"] for r in rows]
        start = time.monotonic()
        ours = transcribe(self.f.trained, waves)
        ours_seconds = time.monotonic() - start
        model = WhisperModel(str(wheel_model_dir()), device="cpu", compute_type="int8",
                             cpu_threads=self.options.threads)
        start = time.monotonic()
        theirs = []
        for wave in waves:
            segments, _ = model.transcribe(wave.numpy(), beam_size=5, language="en")
            theirs.append(" ".join(s.text.strip() for s in segments).strip())
        fw_seconds = time.monotonic() - start
        record = {
            "key": key, "kind": "real_speech", "files": [r["file"] for r in rows],
            "base": {**score(refs, ours), "seconds": round(ours_seconds, 2), "hypotheses": ours},
            "faster_whisper_beam5_int8": {**score(refs, theirs), "seconds": round(fw_seconds, 2),
                                          "hypotheses": theirs},
            "references": refs,
        }
        return self.store.put(record)


# ---- the run ---------------------------------------------------------------------------------------------------


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
        f"context {_context_label(foundations.trained)}; {len(options.voices)} new-speaker voices, "
        f"sizes {list(options.sizes)}, {len(options.standard_voices)} standard voices")

    real = bench.real_speech() if options.real_speech else None
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


def _context_label(foundation: Foundation) -> str:
    """"heads <context> / base <context>" (the encoder contexts heads and the base model are served in)."""

    def label(backbone) -> str:
        options = getattr(backbone, "options", None)
        return options.context.label if options is not None else "n/a"

    return f"heads {label(foundation.backbone)} / base {label(foundation.serving_base)}"


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


# ---- summary ---------------------------------------------------------------------------------------------------


def rel_reduction(base_wer: float, wer: float) -> float:
    """(base - system) / base; 0 when the base makes no error and neither does the system."""
    if base_wer == 0:
        return 0.0 if wer == 0 else -math.inf
    return (base_wer - wer) / base_wer


def reference_seconds(record: dict) -> float:
    """A measurement's training seconds on the reference machine (``hra.bench.speed``). Measurements taken before
    the benchmark calibrated its budgets carry no factor: they ran on reference-class machines (factor taken as 1;
    run A's machine was about 0.77)."""
    return record["train_seconds"] / (record.get("speed_factor") or 1.0)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    options: BenchOptions,
    foundations: Foundations,
    records: list[dict],
    real: dict | None,
    product: dict[str, str] | None = None,
) -> dict:
    """Headline numbers. "linear"/"ffn" are the heads as the product trains them (``product``: the init that
    ``HeadTrainingOptions`` defaults to); the controller ablations compare zero-started linear heads."""
    product = product or {"linear": "linear_zero", "ffn": "ffn_zero"}
    lin_sys, ffn_sys = product["linear"], product["ffn"]
    base = {r["voice"]: r for r in records if r["kind"] == "base"}
    systems = [r for r in records if r["kind"] == "system" and "skipped" not in r]
    new_voices = [v for v in options.voices if v in base]
    failing = [v for v in new_voices if base[v]["wer_capped"] > FAIL_THRESHOLD]
    handled = [v for v in new_voices if v not in failing]

    def wer(voice: str, size: int, system: str) -> float | None:
        for r in systems:
            if r["voice"] == voice and r["size"] == size and r["system"] == system:
                return r["wer"]
        return None

    def served_wer(voice: str, size: int, system: str) -> float | None:
        """What the speaker gets: the system if the product's gate promoted it, else the base (None: not gated)."""
        for r in systems:
            if r["voice"] == voice and r["size"] == size and r["system"] == system and "gate" in r:
                return r["wer"] if r["gate"]["decision"] == "promote" else base[voice]["wer"]
        return None

    def reductions(voices: list[str], size: int, system: str, served: bool = False) -> list[float]:
        out = []
        for v in voices:
            w = (served_wer if served else wer)(v, size, system)
            if w is not None:
                out.append(rel_reduction(base[v]["wer"], w))
        return out

    def promoted(voices: list[str], size: int, system: str) -> str | None:
        gated = [r for r in systems if r["voice"] in voices and r["size"] == size and r["system"] == system
                 and "gate" in r]
        if not gated:
            return None
        return f"{sum(r['gate']['decision'] == 'promote' for r in gated)}/{len(gated)}"

    per_system: dict[str, dict] = {}
    for size in options.sizes:
        for name in options.systems_by_size.get(size, ()):
            red_fail = reductions(failing, size, name)
            red_all = reductions(new_voices, size, name)
            if not red_all:
                continue
            rows = [r for r in systems if r["size"] == size and r["system"] == name and r["voice"] in new_voices]
            per_system[f"{name}_{size}"] = {
                "system": name, "size": size, "voices": len(red_all),
                "median_rel_wer_reduction_failing": _median(red_fail),
                "worst_rel_wer_reduction_all": min(red_all),
                "promoted_by_gate": promoted(new_voices, size, name),
                "median_served_rel_wer_reduction_failing": _median(reductions(failing, size, name, served=True)),
                "worst_served_rel_wer_reduction_all": _min_or_none(reductions(new_voices, size, name, served=True)),
                "median_wer": _median([r["wer"] for r in rows]),
                "parameters": rows[0]["parameters"], "stored_bytes": rows[0]["stored_bytes"],
                "train_seconds_median": _median([r["train_seconds"] for r in rows]),
                "train_reference_seconds_median": _median([reference_seconds(r) for r in rows]),
                "epochs_median": _median([r["epochs"] for r in rows]),
            }

    std = list(options.standard_voices)
    std_base = [base[v] for v in std if v in base]
    base_wer_standard = (sum(r["errors"] for r in std_base) / sum(r["words"] for r in std_base)) if std_base else None

    def ratio_to(system_a: str, system_b: str, size: int = HEADLINE_SIZE) -> float | None:
        vals = []
        for v in failing:
            a, b = wer(v, size, system_a), wer(v, size, system_b)
            if a is not None and b is not None and b > 0:
                vals.append((a - b) / b)
        return _median(vals)

    def gain_over(better: str, worse: str, size: int = HEADLINE_SIZE) -> float | None:
        """Median relative WER gain of ``better`` over ``worse``: the median of -(a - b) / b."""
        ratio = ratio_to(better, worse, size)
        return None if ratio is None else -ratio

    def params(system: str) -> int | None:
        for r in systems:
            if r["system"] == system:
                return r["parameters"]
        return None

    lin, res = params(lin_sys), params("houlsby")
    calibrated = [r["speed_factor"] for r in systems if r.get("speed_factor")]
    s50 = per_system.get(f"{lin_sys}_{HEADLINE_SIZE}", {})
    headline = {
        "base_wer_standard_voices": base_wer_standard,
        "median_rel_wer_reduction_linear_50": per_system.get(f"{lin_sys}_50", {}).get("median_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_ffn_50": per_system.get(f"{ffn_sys}_50", {}).get("median_rel_wer_reduction_failing"),
        "worst_rel_wer_reduction_linear_50": per_system.get(f"{lin_sys}_50", {}).get("worst_rel_wer_reduction_all"),
        "param_ratio_linear_vs_residual": (lin / res) if lin and res else None,
        "train_seconds_linear_50": s50.get("train_seconds_median"),
        "train_reference_seconds_linear_50": s50.get("train_reference_seconds_median"),
        "controller_vs_random_rel_gain": gain_over("linear_zero", "hra_random"),
        "base_wer_real_speech": real["base"]["wer"] if real else None,
        "faster_whisper_wer_real_speech": real["faster_whisper_beam5_int8"]["wer"] if real else None,
        # context for the targets
        "median_rel_wer_reduction_linear_prior_50": per_system.get("linear_prior_50", {}).get(
            "median_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_ffn_prior_50": per_system.get("ffn_prior_50", {}).get(
            "median_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_residual_50": per_system.get("houlsby_50", {}).get("median_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_lora_50": per_system.get("lora_50", {}).get("median_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_full_ft_50": per_system.get("full_ft_50", {}).get("median_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_linear_50_all_new_speaker_voices": _median(
            reductions(new_voices, HEADLINE_SIZE, lin_sys)),
        "median_rel_wer_reduction_ffn_50_all_new_speaker_voices": _median(
            reductions(new_voices, HEADLINE_SIZE, ffn_sys)),
        "linear_vs_residual_rel_wer_50": ratio_to(lin_sys, "houlsby"),
        "recurrence_rel_gain_50": gain_over("linear_zero", "hra_u0"),
        "decoder_layers_rel_gain_50": gain_over("hra_decoder", "linear_zero"),
        "worst_rel_wer_reduction_linear_50_standard_voices": _min_or_none(
            [rel_reduction(base[v]["wer"], w) for v in std if v in base
             if (w := wer(v, STANDARD_SIZE, lin_sys)) is not None]),
        "worst_rel_wer_reduction_ffn_50_standard_voices": _min_or_none(
            [rel_reduction(base[v]["wer"], w) for v in std if v in base
             if (w := wer(v, STANDARD_SIZE, ffn_sys)) is not None]),
        # served = after the product's promotion gate (a rejected head leaves the speaker on the base)
        "worst_rel_wer_reduction_linear_50_served": per_system.get(f"{lin_sys}_50", {}).get(
            "worst_served_rel_wer_reduction_all"),
        "worst_rel_wer_reduction_ffn_50_served": per_system.get(f"{ffn_sys}_50", {}).get(
            "worst_served_rel_wer_reduction_all"),
        "median_rel_wer_reduction_linear_50_served": per_system.get(f"{lin_sys}_50", {}).get(
            "median_served_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_ffn_50_served": per_system.get(f"{ffn_sys}_50", {}).get(
            "median_served_rel_wer_reduction_failing"),
        "promoted_linear_50_new_speaker_voices": promoted(new_voices, HEADLINE_SIZE, lin_sys),
        "promoted_linear_50_failing_voices": promoted(failing, HEADLINE_SIZE, lin_sys),
        "promoted_linear_50_standard_voices": promoted(std, STANDARD_SIZE, lin_sys),
        "worst_rel_wer_reduction_linear_50_standard_voices_served": _min_or_none(
            reductions([v for v in std if v in base], STANDARD_SIZE, lin_sys, served=True)),
        "headline_heads": f"{lin_sys} / {ffn_sys} (the product's default init)",
        "median_rel_wer_reduction_linear_zero_50": per_system.get("linear_zero_50", {}).get(
            "median_rel_wer_reduction_failing"),
        "median_rel_wer_reduction_ffn_zero_50": per_system.get("ffn_zero_50", {}).get(
            "median_rel_wer_reduction_failing"),
        "failing_voices": len(failing),
        "controller": foundations.controller_kind,
        "context": _context_label(foundations.trained),
        "quick": options.quick,
    }
    targets = {
        "real_speech_within_0.03_of_faster_whisper": _check(
            headline["base_wer_real_speech"], lambda x: x <= headline["faster_whisper_wer_real_speech"] + 0.03),
        "median_rel_wer_reduction_linear_50_>=_0.50": _check(headline["median_rel_wer_reduction_linear_50"],
                                                             lambda x: x >= 0.50),
        "median_rel_wer_reduction_ffn_50_>=_0.60": _check(headline["median_rel_wer_reduction_ffn_50"],
                                                          lambda x: x >= 0.60),
        "no_new_speaker_voice_worse_linear_50": _check(headline["worst_rel_wer_reduction_linear_50"],
                                                       lambda x: x >= 0),
        "no_standard_voice_worse_linear_50": _check(
            headline["worst_rel_wer_reduction_linear_50_standard_voices"], lambda x: x >= 0),
        "no_new_speaker_voice_worse_linear_50_served": _check(
            headline["worst_rel_wer_reduction_linear_50_served"], lambda x: x >= 0),
        "no_standard_voice_worse_linear_50_served": _check(
            headline["worst_rel_wer_reduction_linear_50_standard_voices_served"], lambda x: x >= 0),
        "controller_vs_random_rel_gain_>=_0.10": _check(headline["controller_vs_random_rel_gain"],
                                                        lambda x: x >= 0.10),
        "param_ratio_linear_vs_residual_<=_0.125": _check(headline["param_ratio_linear_vs_residual"],
                                                          lambda x: x <= 0.125),
        "linear_wer_within_10pct_of_residual": _check(headline["linear_vs_residual_rel_wer_50"], lambda x: x <= 0.10),
        "train_seconds_linear_50_<=_60": _check(headline["train_seconds_linear_50"], lambda x: x <= 60),
    }
    per_voice: dict[str, dict] = {}
    for r in records:
        entry = per_voice.setdefault(r["voice"], {"group": r["group"], "kind": r.get("voice_kind"), "systems": {}})
        if r["kind"] == "base":
            entry.update({"base_wer": r["wer"], "base_wer_capped": r["wer_capped"], "words": r["words"],
                          "fails": r["wer_capped"] > FAIL_THRESHOLD})
        elif "skipped" in r:
            entry["systems"][f"{r['system']}_{r['size']}"] = {"skipped": r["skipped"]}
        else:
            entry["systems"][f"{r['system']}_{r['size']}"] = {
                k: r[k] for k in ("wer", "wer_capped", "parameters", "stored_bytes", "train_seconds", "eval_seconds",
                                  "epochs", "best_epoch", "stopped_by", "holdout_loss", "learning_rate")
            }
            entry["systems"][f"{r['system']}_{r['size']}"]["rel_wer_reduction"] = rel_reduction(
                base[r["voice"]]["wer"], r["wer"])
            if "gate" in r:
                entry["systems"][f"{r['system']}_{r['size']}"]["gate"] = {
                    k: r["gate"][k] for k in ("decision", "confidence", "base_wer", "candidate_wer")}
    examples = _examples(records)
    return {
        "description": __doc__,
        "headline": headline,
        "targets": targets,
        "systems": {s.name: asdict(s) for s in SYSTEMS},
        "per_system": per_system,
        "per_voice": per_voice,
        "failing_voices": failing,
        "handled_new_speaker_voices": handled,
        "real_speech": None if real is None else {
            "files": len(real["files"]),
            "base_wer": real["base"]["wer"], "base_seconds": real["base"]["seconds"],
            "faster_whisper_beam5_int8_wer": real["faster_whisper_beam5_int8"]["wer"],
            "faster_whisper_seconds": real["faster_whisper_beam5_int8"]["seconds"],
            "differences": [
                {"file": f, "reference": ref, "base": a, "faster_whisper": b}
                for f, ref, a, b in zip(real["files"], real["references"], real["base"]["hypotheses"],
                                        real["faster_whisper_beam5_int8"]["hypotheses"])
                if a != b
            ],
        },
        "examples": examples,
        "setup": {
            "foundation_fingerprint": foundations.trained.fingerprint,
            "controller": foundations.controller_kind,
            "controller_config": foundations.trained.controller.config.to_dict(),
            "variant_controllers": foundations.variant_kinds,
            "context": _context_label(foundations.trained),
            "training": asdict(options.training),
            "budget": {
                "training_reference_seconds": options.training.max_seconds,
                "reference_machine": REFERENCE_MACHINE, "reference_step_seconds": REFERENCE_STEP_SECONDS,
                "speed_factor_this_run": options.speed_factor,
                "measurements_calibrated": sum(1 for r in systems if r.get("speed_factor")),
                "measurements_before_calibration": sum(1 for r in systems if not r.get("speed_factor")),
                "speed_factor_range": [min(calibrated), max(calibrated)] if calibrated else None,
            },
            "baseline_learning_rates": DEFAULT_LEARNING_RATES,
            "adapters": {k: options.adapter_config(k).to_dict() for k in ("houlsby", "lora", "full_ft")},
            "voices": list(options.voices), "standard_voices": list(options.standard_voices),
            "sizes": list(options.sizes), "systems_by_size": {str(k): list(v) for k, v in options.systems_by_size.items()},
            "n_eval": options.n_eval, "n_gate": options.n_gate, "fail_threshold_capped_wer": FAIL_THRESHOLD,
            "corpus": str(options.corpus), "seed": options.training.seed,
            "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": options.threads,
                        "cpu": cpu_name()},
        },
    }


def _min_or_none(values: list[float]) -> float | None:
    return min(values) if values else None


def _check(value: float | None, test) -> dict:
    return {"value": value, "met": None if value is None else bool(test(value))}


def _examples(records: list[dict], per_voice: int = 2) -> list[dict]:
    """A few held-out utterances per voice: base and headline systems side by side."""
    out = []
    by_voice: dict[str, dict[str, list[str]]] = {}
    for r in records:
        if "hypotheses" in r and (r["kind"] == "base" or r["size"] == HEADLINE_SIZE):
            by_voice.setdefault(r["voice"], {})[r["system"]] = r["hypotheses"]
    for voice, hyps in by_voice.items():
        for i in range(min(per_voice, len(hyps.get("base", [])))):
            out.append({"voice": voice, "index": i, **{k: v[i] for k, v in hyps.items() if i < len(v)}})
    return out


# ---- output ----------------------------------------------------------------------------------------------------


def format_table(report: dict) -> str:
    lines = []
    systems = [s.name for s in SYSTEMS]
    sizes = sorted({int(k.rsplit("_", 1)[1]) for v in report["per_voice"].values() for k in v["systems"]})
    header = f"{'voice':25s} {'':4s} {'n':>4s} {'base':>6s} " + " ".join(f"{s:>11s}" for s in systems)
    lines.append("WER on held-out utterances (every error counted); 'FAIL' marks voices the base fails")
    lines.append(header)
    for voice, entry in report["per_voice"].items():
        if "base_wer" not in entry:
            continue
        flag = "FAIL" if entry.get("fails") else ""
        for size in sizes:
            cells = []
            for s in systems:
                r = entry["systems"].get(f"{s}_{size}")
                cells.append(f"{'-':>11s}" if r is None or "wer" not in r else f"{r['wer']:11.3f}")
            if all(c.strip() == "-" for c in cells):
                continue
            lines.append(f"{voice[:25]:25s} {flag:4s} {size:4d} {entry['base_wer']:6.3f} " + " ".join(cells))
        if not any(f"{s}_{size}" in entry["systems"] for s in systems for size in sizes):
            lines.append(f"{voice[:25]:25s} {flag:4s} {'':4s} {entry['base_wer']:6.3f}")
    lines.append("")
    lines.append(f"{'system @ size':22s} {'median rel. red.':>16s} {'worst':>7s} {'params':>10s} {'bytes':>11s} "
                 f"{'ref. s':>8s} {'epochs':>6s} {'promoted':>8s} {'worst served':>12s}")
    for key, s in report["per_system"].items():
        med = s["median_rel_wer_reduction_failing"]
        served = s.get("worst_served_rel_wer_reduction_all")
        lines.append(f"{key:22s} {('%.3f' % med) if med is not None else 'n/a':>16s} "
                     f"{s['worst_rel_wer_reduction_all']:7.3f} {s['parameters']:10,d} {s['stored_bytes']:11,d} "
                     f"{s['train_reference_seconds_median']:8.1f} {s['epochs_median']:6.1f} "
                     f"{s.get('promoted_by_gate') or '-':>8s} "
                     f"{('%.3f' % served) if served is not None else '-':>12s}")
    if report.get("real_speech"):
        rs = report["real_speech"]
        lines.append("")
        lines.append(f"real speech ({rs['files']} files): base {rs['base_wer']:.3f}, faster-whisper beam 5 int8 "
                     f"{rs['faster_whisper_beam5_int8_wer']:.3f}")
    lines.append("")
    for name, t in report["targets"].items():
        value = t["value"]
        shown = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"target {name:48s} {shown:>8s}  {verdict}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> BenchOptions:
    from hra.corpus import select_voices

    p = argparse.ArgumentParser(prog="python -m hra.bench.foundation", description=__doc__.splitlines()[0])
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
    p.add_argument("--corpus", type=Path, default=ROOT / "corpus")
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
    p.add_argument("--no-real-speech", action="store_true")
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
        real_speech=not args.no_real_speech,
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


if __name__ == "__main__":
    sys.exit(main())
