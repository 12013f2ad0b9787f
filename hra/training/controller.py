"""Training the shared HRA controller, once, over the corpus's controller voices.

Phase 1 trains the controller jointly with one linear head per controller voice (multi-speaker batches: every
sample gets its own voice's head through the batched ``HeadApplier``), with waveform augmentation (speed, gain,
noise). Phase 2 freezes the controller and fits one FFN head per voice (all sharing their seeded first
projection). The means of the per-voice linear heads (phase 1, which end with the final controller) and of the
FFN heads are shipped as the population priors.

Outputs in ``--out`` (default ``hra/assets/``): ``controller.safetensors``, ``prior_linear.safetensors``,
``prior_ffn.safetensors`` (head artifacts bound to the new foundation) and ``controller.json`` (config,
options, voices, metrics, time, hardware, the command). Checkpoints (resumable with ``--resume``) and the log
go to ``--work-dir``.

    python -m hra.training.controller --manifest corpus/manifest.jsonl --out hra/assets/
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from hra.backbone.base import Backbone
from hra.foundation import Foundation
from hra.adapter.artifacts import head_to_bytes, save_controller
from hra.adapter.controller import Controller, ControllerConfig
from hra.adapter.heads import Head, HeadConfig, make_head
from hra.adapter.hook import HRAHook
from hra.training.augment import WaveAugment
from hra.training.data import Utterance, encoder_frames, frame_bounded_batches, load_manifest_utterances
from hra.training.loop import resolve_precision
from hra.training.schedule import RecordNames, TrainingSchedule, options_from_record, options_record, schedule_names

log = logging.getLogger("hra.training.controller")

# The per-voice heads' schedule, in both phases (warm-up and cosine decay re-fitted to each phase's budget).
CONTROLLER_SCHEDULE = TrainingSchedule(
    learning_rate=3e-3, warmup_steps=20, min_lr_fraction=0.1, grad_clip=1.0, max_batch_frames=2400, weight_decay=0.0
)


@dataclass(frozen=True)
class ControllerTrainingOptions:
    """d_controller / u_init: the controller's shape; include_decoder: the controller also runs across the decoder
    blocks (``hra.adapter.controller``); max_seconds: the whole run's wall-clock budget, of which
    prior_fraction goes to phase 2; epochs / prior_epochs: epoch caps per phase; per_voice: training
    utterances per voice (None: all); holdout_per_voice: eval-split utterances per voice for the held-out loss.

    Two learning rates, one schedule: ``schedule`` is the per-voice heads' (its ``learning_rate`` is the heads'
    base rate in both phases; its warm-up, decay floor, gradient clip and batch bound apply to the whole step),
    and ``controller_lr`` is the base rate of the controller's parameter group in phase 1, which follows the same
    warm-up and decay. Records (``controller.json``, ``--options``) are flat, the heads' rate as ``head_lr``."""

    d_controller: int = 64
    u_init: float = 0.5
    train_u: bool = True
    include_decoder: bool = False
    epochs: int = 12
    max_seconds: float = 2100.0
    prior_fraction: float = 0.25
    prior_epochs: int = 4
    controller_lr: float = 2e-3
    schedule: TrainingSchedule = CONTROLLER_SCHEDULE
    per_voice: int | None = None
    holdout_per_voice: int = 4
    ffn_hidden: int = 128
    augment: bool = True
    precision: str = "auto"
    checkpoint_seconds: float = 120.0
    seed: int = 0

    RECORD_NAMES: ClassVar[RecordNames] = {"schedule": schedule_names(learning_rate="head_lr")}

    def __post_init__(self) -> None:
        if not 0 <= self.prior_fraction < 1:
            raise ValueError("prior_fraction must be in [0, 1)")
        if self.epochs < 1 or self.max_seconds <= 0:
            raise ValueError("budgets must be positive")
        if self.controller_lr <= 0:
            raise ValueError("controller_lr must be positive")

    def to_record(self) -> dict[str, Any]:
        return options_record(self, self.RECORD_NAMES)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "ControllerTrainingOptions":
        """From a flat record (``controller.json``'s "options", also those written before ``schedule``)."""
        return options_from_record(cls, record, cls.RECORD_NAMES)


@dataclass
class RunState:
    """Everything a resumed run needs (saved with torch.save in the work dir)."""

    phase: int = 1
    epoch: int = 0
    position: int = 0  # batches done in the current epoch
    step: int = 0
    elapsed: float = 0.0
    order: list[list[int]] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    phase_step0: int = 0  # step and seconds at which the current phase began
    phase_time0: float = 0.0


class ControllerTrainer:
    """Holds the controller, the per-voice heads and the optimizer; runs both phases with checkpoints."""

    def __init__(
        self,
        backbone: Backbone,
        train: list[Utterance],
        holdout: list[Utterance],
        options: ControllerTrainingOptions,
        work_dir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The clock is a parameter so the time budget can be tested on any machine's speed.
        self.clock = clock
        self.backbone = backbone
        self.train_utts = train
        self.holdout_utts = holdout
        self.options = options
        self.work_dir = work_dir
        self.voices = sorted({u.voice for u in train})
        self.device = next(iter(_params(backbone)), torch.zeros(())).device
        self.dtype = resolve_precision(options.precision, self.device)
        torch.manual_seed(options.seed)
        self.controller = Controller(
            ControllerConfig(
                d_model=backbone.d_model,
                d_controller=options.d_controller,
                n_layers=backbone.n_encoder_layers,
                u_init=options.u_init,
                train_u=options.train_u,
                include_decoder=options.include_decoder,
            )
        ).to(self.device)
        self.heads = self._new_heads("linear")
        self.ffn_heads: dict[str, Head] = {}
        self.state = RunState()
        self.rng = random.Random(options.seed)
        self.augment = WaveAugment() if options.augment else None
        self.optimizer = self._phase1_optimizer()

    # -- setup ------------------------------------------------------------------------------------------------
    def _head_config(self, head_type: str) -> HeadConfig:
        return HeadConfig(head_type, self.options.d_controller, self.backbone.d_model, hidden=self.options.ffn_hidden)

    def _new_heads(self, head_type: str) -> dict[str, Head]:
        # Same seed for every voice: the FFN heads share their first projection, so their mean is meaningful.
        return {
            v: make_head(self._head_config(head_type), seed=self.options.seed).to(self.device) for v in self.voices
        }

    def _phase1_optimizer(self) -> torch.optim.Optimizer:
        return self.options.schedule.optimizer(
            [
                {
                    "params": [p for p in self.controller.parameters() if p.requires_grad],
                    "lr": self.options.controller_lr,
                },
                {
                    "params": [p for h in self.heads.values() for p in h.parameters()],
                    "lr": self.options.schedule.learning_rate,
                },
            ]
        )

    def _phase2_optimizer(self) -> torch.optim.Optimizer:
        return self.options.schedule.optimizer([p for h in self.ffn_heads.values() for p in h.parameters()])

    def _enter_phase2(self) -> None:
        # The linear heads of phase 1 ended with the final controller: they stay (their mean is the linear prior).
        self.controller.requires_grad_(False)
        for head in self.heads.values():
            head.requires_grad_(False)
        self.ffn_heads = self._new_heads("ffn")
        self.optimizer = self._phase2_optimizer()

    # -- checkpoints ------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "options": self.options.to_record(),
            "voices": self.voices,
            "controller_config": self.controller.config.to_dict(),
            "controller": self.controller.state_dict(),
            "heads": {v: h.state_dict() for v, h in self.heads.items()},
            "ffn_heads": {v: h.state_dict() for v, h in self.ffn_heads.items()},
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state),
            "rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(self.checkpoint_path)

    def load_checkpoint(self) -> None:
        payload = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        if payload["voices"] != self.voices:
            raise ValueError("the checkpoint was trained on other voices; start a new work dir")
        self.controller.load_state_dict(payload["controller"])
        self.state = RunState(**payload["state"])
        if self.state.phase == 2:
            self._enter_phase2()
            for v, sd in payload["ffn_heads"].items():
                self.ffn_heads[v].load_state_dict(sd)
        for v, sd in payload["heads"].items():
            self.heads[v].load_state_dict(sd)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.rng.setstate(payload["rng"])
        torch.set_rng_state(payload["torch_rng"])
        log.info("resumed at phase %d epoch %d batch %d step %d (%.0f s done)", self.state.phase,
                 self.state.epoch, self.state.position, self.state.step, self.state.elapsed)

    # -- steps ------------------------------------------------------------------------------------------------
    def _epoch_batches(self, shuffle: bool = True) -> list[list[int]]:
        # Augmentation may slow an utterance down by 10%: leave room in the frame bound.
        lengths = [math.ceil(encoder_frames(u.waveform.numel()) * 1.12) for u in self.train_utts]
        batches = frame_bounded_batches(lengths, self.options.schedule.max_batch_frames)
        if shuffle:
            self.rng.shuffle(batches)
        return batches

    def _loss(self, utts: Sequence[Utterance], heads_by_voice: dict[str, Head], augment: bool) -> torch.Tensor:
        waves = [self.augment(u.waveform, self.rng) if (augment and self.augment) else u.waveform for u in utts]
        enc = self.backbone.prepare(waves)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            hook = HRAHook(self.controller, [heads_by_voice[u.voice] for u in utts], frames=enc.frames)
            out = self.backbone.encode(enc, hook)
            loss = self.backbone.teacher_forced_loss(
                out, [u.tokens for u in utts], frames=enc.frames, decoder_hook=hook.decoder_hook()
            )
        return loss.float()

    @torch.no_grad()
    def holdout_loss(self, heads_by_voice: dict[str, Head]) -> float | None:
        if not self.holdout_utts:
            return None
        lengths = [encoder_frames(u.waveform.numel()) for u in self.holdout_utts]
        total, tokens = 0.0, 0
        for batch in frame_bounded_batches(lengths, self.options.schedule.max_batch_frames):
            utts = [self.holdout_utts[i] for i in batch]
            n = sum(len(u.tokens) + 1 for u in utts)
            total += float(self._loss(utts, heads_by_voice, augment=False)) * n
            tokens += n
        return total / tokens

    def run(self) -> dict:
        """Both phases until their epoch caps or the time budget; checkpoints as it goes."""
        o = self.options
        started = self.clock() - self.state.elapsed
        if self.state.phase == 1 and self.state.step == 0:
            self.state.history.append({"phase": 1, "epoch": 0, "holdout_loss": self.holdout_loss(self.heads)})
            log.info("initial holdout loss %s", self.state.history[-1]["holdout_loss"])
        if self.state.phase == 1:
            self._run_phase(1, started, o.max_seconds * (1 - o.prior_fraction), o.epochs,
                            [o.controller_lr, o.schedule.learning_rate])
        if o.prior_fraction > 0:
            if self.state.phase == 1:
                self.state = RunState(
                    phase=2, step=self.state.step, elapsed=self.clock() - started, history=self.state.history,
                    phase_step0=self.state.step, phase_time0=self.clock() - started,
                )
                self._enter_phase2()
                self.save_checkpoint()
            self._run_phase(2, started, o.max_seconds, o.prior_epochs, [o.schedule.learning_rate])
        self.state.elapsed = self.clock() - started
        self.save_checkpoint()
        return {"seconds": round(self.state.elapsed, 1), "steps": self.state.step, "history": self.state.history}

    def _run_phase(self, phase: int, started: float, budget: float, max_epochs: int, base_lrs: list[float]) -> None:
        o, schedule = self.options, self.options.schedule
        last_checkpoint = self.clock()
        steps_per_epoch = len(self._epoch_batches(shuffle=False))
        while self.state.epoch < max_epochs:
            if not self.state.order:
                self.state.order = self._epoch_batches()
            epoch_loss, epoch_tokens, out_of_time = 0.0, 0, False
            while self.state.position < len(self.state.order):
                elapsed = self.clock() - started
                if elapsed > budget:
                    out_of_time = True
                    break
                # Cosine schedule over the steps the time budget allows, re-estimated as the run goes.
                done = self.state.step - self.state.phase_step0
                total = max_epochs * steps_per_epoch
                if done >= 10:
                    per_step = (elapsed - self.state.phase_time0) / done
                    total = max(done + 1, min(total, done + int((budget - elapsed) / per_step)))
                factor = schedule.set_rates(self.optimizer, done, total, base_lrs)
                utts = [self.train_utts[i] for i in self.state.order[self.state.position]]
                loss = self._loss(utts, self.heads if phase == 1 else self.ffn_heads, augment=True)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                schedule.clip(p for g in self.optimizer.param_groups for p in g["params"])
                self.optimizer.step()
                self.state.step += 1
                self.state.position += 1
                n_tok = sum(len(u.tokens) + 1 for u in utts)
                epoch_loss += float(loss.detach()) * n_tok
                epoch_tokens += n_tok
                if self.state.step % 20 == 0:
                    log.info(
                        "phase %d epoch %d batch %d/%d step %d loss %.4f lr x%.3f %.0f s", phase,
                        self.state.epoch + 1, self.state.position, len(self.state.order), self.state.step,
                        float(loss.detach()), factor, self.clock() - started,
                    )
                if self.clock() - last_checkpoint > o.checkpoint_seconds:
                    self.state.elapsed = self.clock() - started
                    self.save_checkpoint()
                    last_checkpoint = self.clock()
            if out_of_time:
                log.info("phase %d: time budget reached in epoch %d", phase, self.state.epoch + 1)
                if epoch_tokens == 0:
                    return
            else:
                self.state.epoch += 1
                self.state.position = 0
                self.state.order = []
            record = {
                "phase": phase,
                "epoch": self.state.epoch + (1 if out_of_time else 0),
                "complete": not out_of_time,
                "step": self.state.step,
                "train_loss": epoch_loss / max(1, epoch_tokens),
                "seconds": round(self.clock() - started, 1),
            }
            if phase == 1:
                record["holdout_loss"] = self.holdout_loss(self.heads)
                record["u_mean"] = float(self.controller.u.detach().mean())
            else:
                record["holdout_loss_ffn"] = self.holdout_loss(self.ffn_heads)
            self.state.history.append(record)
            log.info("epoch done: %s", json.dumps(record))
            self.state.elapsed = self.clock() - started
            self.save_checkpoint()
            last_checkpoint = self.clock()
            if out_of_time:
                return

    # -- results ----------------------------------------------------------------------------------------------
    def mean_head(self, heads: dict[str, Head]) -> Head:
        first = next(iter(heads.values()))
        mean = make_head(first.config, seed=None).to(self.device)
        with torch.no_grad():
            for name, p in mean.named_parameters():
                p.copy_(torch.stack([dict(h.named_parameters())[name] for h in heads.values()]).mean(0))
        return mean.requires_grad_(False)


def _params(backbone: Backbone):
    if isinstance(backbone, torch.nn.Module):
        return backbone.parameters()
    model = getattr(backbone, "model", None)
    return model.parameters() if isinstance(model, torch.nn.Module) else iter(())


def write_outputs(trainer: ControllerTrainer, result: dict, out_dir: Path, extra: dict) -> dict:
    """controller.safetensors, prior_{linear,ffn}.safetensors and controller.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    controller = trainer.controller.eval().requires_grad_(False)
    summary = {
        "config": controller.config.to_dict(),
        "options": trainer.options.to_record(),
        "voices": trainer.voices,
        "train_utterances": len(trainer.train_utts),
        "holdout_utterances": len(trainer.holdout_utts),
        "seconds": result["seconds"],
        "steps": result["steps"],
        "history": result["history"],
        "parameters": controller.num_parameters,
        "precision": str(trainer.dtype).removeprefix("torch."),
        "hardware": {"machine": platform.machine(), "processor": cpu_name(), "torch_threads": torch.get_num_threads(),
                     "device": str(trainer.device)},
        "torch": torch.__version__,
        **extra,
    }
    save_controller(controller, out_dir / "controller.safetensors",
                    {k: summary[k] for k in ("voices", "options", "seconds", "steps", "backbone") if k in summary})
    foundation = Foundation.build(trainer.backbone, controller, str(out_dir / "controller.safetensors"))
    summary["controller_fingerprint"] = foundation.controller_fingerprint
    summary["foundation_fingerprint"] = foundation.fingerprint
    for head_type, heads in (("linear", trainer.heads), ("ffn", trainer.ffn_heads)):
        if not heads:
            continue
        prior = trainer.mean_head(heads)
        meta = {"kind": "population_prior", "voices": trainer.voices, "of": f"{len(heads)} controller-group heads"}
        (out_dir / f"prior_{head_type}.safetensors").write_bytes(head_to_bytes(prior, foundation, meta))
        summary[f"prior_{head_type}_parameters"] = prior.num_parameters
    (out_dir / "controller.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def cpu_name() -> str:
    """The CPU's model name, for the hardware line of training and benchmark records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hra.training.controller", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="corpus manifest.jsonl")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "assets")
    parser.add_argument("--work-dir", type=Path, default=Path("var/hra/controller_run"))
    parser.add_argument("--group", default="controller")
    parser.add_argument("--voices", default="", help="comma-separated voice names (default: the whole group)")
    parser.add_argument("--per-voice", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=ControllerTrainingOptions.max_seconds)
    parser.add_argument("--epochs", type=int, default=ControllerTrainingOptions.epochs)
    parser.add_argument("--d-controller", type=int, default=ControllerTrainingOptions.d_controller)
    parser.add_argument("--options", default="{}", help="JSON of further ControllerTrainingOptions fields, flat as "
                        "controller.json records them (head_lr, warmup_steps, ...) or nested ({\"schedule\": {...}})")
    parser.add_argument("--context", default=None, help="backbone context policy (default: the backbone's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true", help="continue from --work-dir/checkpoint.pt")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(args.work_dir / "train.log")],
    )
    options = ControllerTrainingOptions.from_record(
        {
            **json.loads(args.options),
            "per_voice": args.per_voice,
            "max_seconds": args.max_seconds,
            "epochs": args.epochs,
            "d_controller": args.d_controller,
        }
    )
    from hra.backbone.whisper import BackboneOptions, load_whisper_tiny_en

    backbone = load_whisper_tiny_en(device=args.device)
    if args.context:
        from hra.backbone.features import ContextPolicy

        backbone = backbone.with_options(
            BackboneOptions(context=ContextPolicy.parse(args.context), decoding=backbone.options.decoding)
        )
    voices = [v for v in args.voices.split(",") if v] or None
    t0 = time.monotonic()
    train = load_manifest_utterances(args.manifest, backbone, args.group, "train", voices, options.per_voice)
    holdout = load_manifest_utterances(args.manifest, backbone, args.group, "eval", voices, options.holdout_per_voice)
    if not train:
        parser.error(f"no {args.group!r} training utterances in {args.manifest}")
    log.info("loaded %d train / %d holdout utterances of %d voices in %.1f s", len(train), len(holdout),
             len({u.voice for u in train}), time.monotonic() - t0)
    trainer = ControllerTrainer(backbone, train, holdout, options, args.work_dir)
    if args.resume and trainer.checkpoint_path.is_file():
        trainer.load_checkpoint()
    result = trainer.run()
    command = "python -m hra.training.controller " + shlex.join(argv if argv is not None else sys.argv[1:])
    summary = write_outputs(
        trainer, result, args.out,
        {"command": command, "backbone": {"name": backbone.name, "fingerprint": backbone.fingerprint},
         "manifest": str(args.manifest), "group": args.group, "pid": os.getpid()},
    )
    log.info("wrote %s (controller %s, foundation %s) in %.0f s", args.out, summary["controller_fingerprint"][:12],
             summary["foundation_fingerprint"][:12], result["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
