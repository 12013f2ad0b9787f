"""The training schedule shared by head, controller and meta training, and the flat option records.

``TrainingSchedule`` is the optimizer recipe every trainer here runs: Adam at ``learning_rate`` (with
``weight_decay``), a linear warm-up over ``warmup_steps`` steps, then a cosine decay to ``min_lr_fraction`` of the
rate over the steps the budget allows, gradients clipped to norm ``grad_clip`` (0: none), batches bounded by
``max_batch_frames`` encoder frames (padding included). Each options class holds one (meta training two: its
inner and its outer loop) with its own defaults, and passes it whole to the loop that trains.

Records: head metrics and ``controller.json`` (and what reads them: meta training, the benchmark) store options
as one flat JSON object in the field names they always had (``learning_rate``, ``head_lr``, ``warmup_episodes``,
...). ``options_record`` writes that form and ``options_from_record`` reads it (and the nested form,
``{"schedule": {...}}``), so records written before the schedule was a field of its own stay readable and new
records look the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import torch

T = TypeVar("T")

# (schedule field name in the options) -> (TrainingSchedule field -> record name, or names: the first is written,
# the others are read too).
RecordNames = Mapping[str, Mapping[str, str | tuple[str, ...]]]


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True, kw_only=True)
class TrainingSchedule:
    """learning_rate: the base rate (of the trained heads where a trainer also has other parameter groups, which
    follow the same warm-up and decay from their own base rate); weight_decay: Adam's (L2) weight decay;
    warmup_steps: steps of linear warm-up (meta training's outer loop counts episodes); min_lr_fraction: the rate
    at the end of the cosine decay, as a fraction of the base (1.0: constant after the warm-up); grad_clip: max
    gradient norm (0: no clipping); max_batch_frames: encoder frames per batch (longest x count).

    learning_rate and warmup_steps have no default: every trainer states its own (the rest are the same in all)."""

    learning_rate: float
    weight_decay: float = 0.0
    warmup_steps: int
    min_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    max_batch_frames: int = 2400

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if not 0 <= self.min_lr_fraction <= 1:
            raise ValueError("min_lr_fraction must be in [0, 1]")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("grad_clip and weight_decay must be >= 0")
        if self.max_batch_frames <= 0:
            raise ValueError("max_batch_frames must be positive")

    def factor(self, step: int, total: int) -> float:
        """The rate at ``step`` of ``total`` as a fraction of the base rate."""
        return lr_factor(step, total, self.warmup_steps, self.min_lr_fraction)

    def optimizer(self, params: Iterable[torch.nn.Parameter] | list[dict]) -> torch.optim.Adam:
        """Adam over parameters or parameter groups (a group's own ``lr`` wins over the base rate)."""
        return torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)

    def set_rates(self, optimizer: torch.optim.Optimizer, step: int, total: int, base_rates: Iterable[float]) -> float:
        """Set each parameter group's rate to its base rate x ``factor(step, total)``; returns the factor."""
        factor = self.factor(step, total)
        for group, base in zip(optimizer.param_groups, base_rates):
            group["lr"] = base * factor
        return factor

    def clip(self, params: Iterable[torch.nn.Parameter]) -> None:
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(params), self.grad_clip)


def schedule_names(**renames: str | tuple[str, ...]) -> dict[str, str | tuple[str, ...]]:
    """Record names of a schedule's fields: their own names, except those given."""
    return {f.name: renames.get(f.name, f.name) for f in fields(TrainingSchedule)}


def with_schedule(options: T, name: str = "schedule", **changes: Any) -> T:
    """``options`` with fields of its schedule ``name`` replaced: ``with_schedule(options, learning_rate=1e-3)``."""
    return dataclasses.replace(options, **{name: dataclasses.replace(getattr(options, name), **changes)})


def _names(spec: str | tuple[str, ...]) -> tuple[str, ...]:
    return (spec,) if isinstance(spec, str) else spec


def options_record(options: Any, names: RecordNames) -> dict[str, Any]:
    """The options as one flat JSON-ready dict: each schedule's fields under their record names, in field order."""
    record: dict[str, Any] = {}
    for f in fields(options):
        if not f.metadata.get("record", True):  # changes memory or speed, never the result: not part of identity
            continue
        value = getattr(options, f.name)
        if f.name in names:
            for sf in fields(value):
                record[_names(names[f.name][sf.name])[0]] = getattr(value, sf.name)
        else:
            record[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return record


def options_from_record(cls: type[T], record: Mapping[str, Any], names: RecordNames) -> T:
    """``cls`` from a flat record (``options_record``'s, or one written before the schedules were nested), from
    the nested form (a schedule as a dict or a ``TrainingSchedule``), or a mix: a flat name overrides the nested
    value. Absent fields keep ``cls``'s defaults; an unknown name is a ``TypeError``, like the constructor's."""
    record = dict(record)
    defaults = {f.name: _default(f) for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, renames in names.items():
        nested = record.pop(name, None)
        base = defaults[name]
        if isinstance(nested, Mapping):
            base = dataclasses.replace(base, **nested)
        elif nested is not None:
            base = nested
        flat: dict[str, Any] = {}
        for sf, spec in renames.items():
            for key in _names(spec):
                if key in record:
                    flat.setdefault(sf, record[key])
        kwargs[name] = dataclasses.replace(base, **flat) if flat else base
    for spec in (s for renames in names.values() for s in renames.values()):
        for key in _names(spec):
            record.pop(key, None)
    for key, value in record.items():  # JSON has no tuples: a list where the default is a tuple becomes one
        kwargs[key] = tuple(value) if isinstance(value, list) and isinstance(defaults.get(key), tuple) else value
    return cls(**kwargs)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None
