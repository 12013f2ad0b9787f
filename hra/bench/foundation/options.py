"""What the foundation benchmark compares (the systems) and what one run covers (``BenchOptions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hra.baselines import AdapterConfig
from hra.bench.paths import CORPUS, REAL_SPEECH, RESULTS_DIR, ROOT
from hra.training.head import HeadTrainingOptions

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
    corpus: Path = CORPUS
    work_dir: Path = ROOT / "var" / "bench_foundation"
    out: Path = RESULTS_DIR / "foundation.json"
    controller: Path | None = None
    variant_controllers: dict[str, Path] = field(default_factory=dict)  # name -> controller safetensors
    train_variant_controllers: bool = False
    real_speech: Path | None = REAL_SPEECH  # recordings of real people (None: not measured)
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

