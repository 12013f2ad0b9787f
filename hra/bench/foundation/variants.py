"""The foundations the systems run on: the product's (trained controller), an untrained controller's, and the
variant controllers' (trained by the shipped controller's own command with some options changed)."""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch

from hra.adapter.artifacts import load_controller
from hra.adapter.controller import Controller
from hra.bench.foundation.options import COMMITTED_CONTROLLERS, VARIANT_CONTROLLERS, BenchOptions, System
from hra.errors import FoundationMismatch
from hra.foundation import DEFAULT_CONTROLLER_PATH, Foundation, load_foundation
from hra.training.head import HeadTrainingOptions, load_prior_head


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
        from hra.backbone.decoding_rules import DecodingOptions
        from hra.backbone.whisper import BASE_SERVING_CONTEXT, BackboneOptions, load_whisper_tiny_en
        from hra.adapter.controller import ControllerConfig

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



def context_label(foundation: Foundation) -> str:
    """"heads <context> / base <context>" (the encoder contexts heads and the base model are served in)."""

    def label(backbone) -> str:
        options = getattr(backbone, "options", None)
        return options.context.label if options is not None else "n/a"

    return f"heads {label(foundation.backbone)} / base {label(foundation.serving_base)}"
