"""Few-step adaptation fine-tuning of the shared controller (first-order MAML over the controller voices).

Joint training (``hra.training.controller``) fits the controller together with one long-trained head per
controller voice, on the same utterances. A product head is different: it starts at the population prior, sees
about 45 utterances of a voice the controller never heard, for a few dozen steps, and must then work on other
utterances of that voice. This phase trains the controller (and the prior) for exactly that, episode by episode:

1. pick a controller voice; split a sample of its utterances into support and query;
2. copy the prior and train it on support batches for ``inner_steps`` Adam steps (controller frozen), as the
   product's head training does (same learning rate, augmentation);
3. the adapted head's loss on the query batch gives the gradient for the controller and, first-order, for the
   prior (the query gradient at the adapted head is applied to the prior).

It starts from a trained controller and prior (``--init``, default the shipped ones) and writes the same
outputs as ``hra.training.controller`` (``controller.safetensors``, ``prior_linear.safetensors``,
``controller.json``); the FFN prior is refitted on the final controller by that module's phase 2.

    python -m hra.training.meta --manifest corpus/manifest.jsonl --out var/meta/out --work-dir var/meta/work
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import random
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from hra.foundation import ASSETS_DIR, Foundation
from hra.adapter.artifacts import head_from_bytes, load_controller
from hra.adapter.heads import Head
from hra.training.augment import WaveAugment
from hra.training.controller import ControllerTrainer, ControllerTrainingOptions, write_outputs
from hra.training.data import Utterance, encoder_frames, load_manifest_utterances
from hra.training.schedule import RecordNames, TrainingSchedule, options_from_record, options_record, schedule_names

log = logging.getLogger("hra.training.meta")

# The inner loop trains like the product's head (its learning rate and batch bound), for a few steps: a short
# warm-up, then a constant rate (min_lr_fraction 1.0: no decay).
INNER_SCHEDULE = TrainingSchedule(
    learning_rate=1e-2, warmup_steps=1, min_lr_fraction=1.0, grad_clip=1.0, max_batch_frames=2400, weight_decay=0.0
)
# The outer loop: one step per episode (warm-up in episodes, cosine decay over the episodes the budget allows);
# its learning_rate is the prior's, its batch bound the query batch's.
OUTER_SCHEDULE = TrainingSchedule(
    learning_rate=1e-3, warmup_steps=10, min_lr_fraction=0.1, grad_clip=1.0, max_batch_frames=2400, weight_decay=0.0
)


@dataclass(frozen=True)
class MetaOptions:
    """inner_steps: Adam steps on support batches per episode, with the ``inner`` schedule (its batch bound is
    the support batch's); ``schedule``: the outer loop's (the prior's learning rate, warm-up in episodes, the
    query batch's bound); controller_lr: the controller's base rate in the outer loop, on the same warm-up and
    decay. Records (``to_record``) are flat, in the names these fields had before the schedules were nested
    (inner_lr, inner_warmup, support_frames, prior_lr, warmup_episodes, query_frames, ...)."""

    inner_steps: int = 4
    inner: TrainingSchedule = INNER_SCHEDULE
    controller_lr: float = 3e-4
    schedule: TrainingSchedule = OUTER_SCHEDULE
    max_episodes: int = 100000
    max_seconds: float = 1800.0
    checkpoint_seconds: float = 120.0
    seed: int = 0

    RECORD_NAMES: ClassVar[RecordNames] = {
        # "grad_clip" was one setting for both loops: an older record's sets the inner clip too.
        "inner": schedule_names(
            learning_rate="inner_lr", warmup_steps="inner_warmup", max_batch_frames="support_frames",
            min_lr_fraction="inner_min_lr_fraction", grad_clip=("inner_grad_clip", "grad_clip"),
            weight_decay="inner_weight_decay",
        ),
        "schedule": schedule_names(learning_rate="prior_lr", warmup_steps="warmup_episodes",
                                   max_batch_frames="query_frames"),
    }

    def to_record(self) -> dict[str, Any]:
        return options_record(self, self.RECORD_NAMES)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "MetaOptions":
        return options_from_record(cls, record, cls.RECORD_NAMES)


def _take_batch(utts: list[Utterance], pool: list[int], max_frames: int) -> list[int]:
    """Indices from ``pool`` (in order) while (longest x count) stays within ``max_frames``; at least one."""
    chosen: list[int] = []
    longest = 0
    for i in pool:
        frames = int(encoder_frames(utts[i].waveform.numel()) * 1.12)
        if chosen and max(longest, frames) * (len(chosen) + 1) > max_frames:
            continue
        chosen.append(i)
        longest = max(longest, frames)
    return chosen


class MetaTrainer:
    def __init__(self, trainer: ControllerTrainer, prior: Head, options: MetaOptions, work_dir: Path) -> None:
        self.t = trainer  # data, loss and the controller live in the joint trainer
        self.options = options
        self.work_dir = work_dir
        self.prior = prior.to(trainer.device).train().requires_grad_(True)
        self.by_voice: dict[str, list[int]] = {}
        for i, u in enumerate(trainer.train_utts):
            self.by_voice.setdefault(u.voice, []).append(i)
        self.rng = random.Random(options.seed)
        self.augment = WaveAugment()
        params = [p for p in trainer.controller.parameters() if p.requires_grad]
        self.outer = options.schedule.optimizer(
            [{"params": params, "lr": options.controller_lr},
             {"params": list(self.prior.parameters()), "lr": options.schedule.learning_rate}]
        )
        self.episode = 0
        self.elapsed = 0.0
        self.history: list[dict] = []

    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / "meta_checkpoint.pt"

    def save(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        payload = {"controller": self.t.controller.state_dict(), "prior": self.prior.state_dict(),
                   "outer": self.outer.state_dict(), "episode": self.episode, "elapsed": self.elapsed,
                   "history": self.history, "rng": self.rng.getstate(), "trainer_rng": self.t.rng.getstate()}
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(self.checkpoint_path)

    def load(self) -> None:
        payload = torch.load(self.checkpoint_path, map_location=self.t.device, weights_only=False)
        self.t.controller.load_state_dict(payload["controller"])
        self.prior.load_state_dict(payload["prior"])
        self.outer.load_state_dict(payload["outer"])
        self.episode, self.elapsed, self.history = payload["episode"], payload["elapsed"], payload["history"]
        self.rng.setstate(payload["rng"])
        self.t.rng.setstate(payload["trainer_rng"])
        log.info("resumed at episode %d (%.0f s done)", self.episode, self.elapsed)

    def run_episode(self, voice: str, outer_factor: float) -> dict:
        o, t = self.options, self.t
        pool = list(self.by_voice[voice])
        self.rng.shuffle(pool)
        query = _take_batch(t.train_utts, pool, o.schedule.max_batch_frames)
        in_query = set(query)
        support_pool = [i for i in pool if i not in in_query]
        head = copy.deepcopy(self.prior)
        inner = o.inner.optimizer(head.parameters())
        t.controller.requires_grad_(False)
        inner_losses = []
        for step in range(o.inner_steps):
            self.rng.shuffle(support_pool)
            batch = [t.train_utts[i] for i in _take_batch(t.train_utts, support_pool, o.inner.max_batch_frames)]
            o.inner.set_rates(inner, step, o.inner_steps, [o.inner.learning_rate])
            loss = t._loss(batch, {voice: head}, augment=True)
            inner.zero_grad(set_to_none=True)
            loss.backward()
            o.inner.clip(head.parameters())
            inner.step()
            inner_losses.append(float(loss.detach()))
        for p in t.controller.parameters():
            p.requires_grad_(p is not t.controller.u or t.controller.config.train_u)
        head.zero_grad(set_to_none=True)
        query_utts = [t.train_utts[i] for i in query]
        query_loss = t._loss(query_utts, {voice: head}, augment=False)
        self.outer.zero_grad(set_to_none=True)
        query_loss.backward()
        # First-order MAML: the query gradient at the adapted head stands in for the prior's gradient.
        for p_prior, p_head in zip(self.prior.parameters(), head.parameters()):
            p_prior.grad = None if p_head.grad is None else p_head.grad.clone()
        o.schedule.clip(p for g in self.outer.param_groups for p in g["params"])
        for group, base in zip(self.outer.param_groups, (o.controller_lr, o.schedule.learning_rate)):
            group["lr"] = base * outer_factor
        self.outer.step()
        return {"voice": voice, "inner_first": inner_losses[0], "inner_last": inner_losses[-1],
                "query": float(query_loss.detach())}

    def run(self) -> dict:
        o = self.options
        started = time.monotonic() - self.elapsed
        last_checkpoint = time.monotonic()
        voices = sorted(self.by_voice)
        window: list[dict] = []
        while self.episode < o.max_episodes:
            elapsed = time.monotonic() - started
            if elapsed > o.max_seconds:
                break
            done = self.episode
            total = o.max_episodes
            if done >= 5:
                per_episode = elapsed / done
                total = max(done + 1, min(total, int(o.max_seconds / per_episode)))
            factor = o.schedule.factor(done, total)
            voice = voices[self.rng.randrange(len(voices))]
            record = self.run_episode(voice, factor)
            self.episode += 1
            window.append(record)
            if len(window) == 20:
                summary = {"episode": self.episode, "seconds": round(time.monotonic() - started, 1),
                           "lr_factor": round(factor, 3),
                           **{k: sum(r[k] for r in window) / len(window)
                              for k in ("inner_first", "inner_last", "query")}}
                self.history.append(summary)
                log.info("%s", json.dumps(summary))
                window = []
            if time.monotonic() - last_checkpoint > o.checkpoint_seconds:
                self.elapsed = time.monotonic() - started
                self.save()
                last_checkpoint = time.monotonic()
        self.elapsed = time.monotonic() - started
        self.save()
        return {"seconds": round(self.elapsed, 1), "episodes": self.episode, "history": self.history}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hra.training.meta", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, default=Path("var/hra/meta_run"))
    parser.add_argument("--init", type=Path, default=ASSETS_DIR, help="folder with controller.safetensors, "
                        "prior_linear.safetensors and controller.json to start from")
    parser.add_argument("--per-voice", type=int, default=None)
    parser.add_argument("--options", default="{}", help="JSON of MetaOptions fields (flat record names or nested)")
    parser.add_argument("--prior-seconds", type=float, default=300.0, help="budget of the FFN prior's refit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(args.work_dir / "train.log")])
    options = MetaOptions.from_record(json.loads(args.options))
    init_record = json.loads((args.init / "controller.json").read_text())
    from hra.backbone.features import ContextPolicy
    from hra.backbone.whisper import BackboneOptions, load_whisper_tiny_en

    backbone = load_whisper_tiny_en()
    context = _context_from_command(init_record["command"])
    if context:
        backbone = backbone.with_options(BackboneOptions(context=ContextPolicy.parse(context),
                                                         decoding=backbone.options.decoding))
    controller = load_controller(args.init / "controller.safetensors")
    init_foundation = Foundation.build(backbone, controller, str(args.init / "controller.safetensors"))
    prior = head_from_bytes((args.init / "prior_linear.safetensors").read_bytes(), init_foundation)
    joint = ControllerTrainingOptions.from_record({**init_record["options"], "per_voice": args.per_voice,
                                                   "max_seconds": args.prior_seconds, "prior_fraction": 0.999,
                                                   "epochs": 1})
    train = load_manifest_utterances(args.manifest, backbone, "controller", "train", None, joint.per_voice)
    holdout = load_manifest_utterances(args.manifest, backbone, "controller", "eval", None, joint.holdout_per_voice)
    trainer = ControllerTrainer(backbone, train, holdout, joint, args.work_dir)
    trainer.controller.load_state_dict(controller.state_dict())
    meta = MetaTrainer(trainer, prior, options, args.work_dir)
    if args.resume and meta.checkpoint_path.is_file():
        meta.load()
    result = meta.run()
    # The FFN prior for the new controller: the joint trainer's phase 2 (controller frozen, one FFN head per voice).
    for head in trainer.heads.values():
        head.load_state_dict(meta.prior.state_dict())
    trainer.state.phase = 2
    trainer._enter_phase2()
    started = time.monotonic()
    trainer._run_phase(2, started, args.prior_seconds, joint.prior_epochs, [joint.schedule.learning_rate])
    command = "python -m hra.training.meta " + shlex.join(argv if argv is not None else sys.argv[1:])
    summary = write_outputs(trainer, {"seconds": result["seconds"], "steps": result["episodes"],
                                      "history": result["history"]}, args.out,
                            {"command": command, "meta_options": options.to_record(), "init": init_record["command"],
                             "backbone": {"name": backbone.name, "fingerprint": backbone.fingerprint},
                             "manifest": str(args.manifest), "group": "controller", "pid": os.getpid()})
    log.info("wrote %s (foundation %s)", args.out, summary["foundation_fingerprint"][:12])
    return 0


def _context_from_command(command: str) -> str | None:
    """The --context of a recorded controller-training command (None: the backbone's default)."""
    parts = shlex.split(command)
    return parts[parts.index("--context") + 1] if "--context" in parts else None


if __name__ == "__main__":
    raise SystemExit(main())
