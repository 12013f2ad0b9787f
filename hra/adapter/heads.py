"""Per-speaker HRA heads: the only parameters trained for a speaker, shared by all encoder layers.

- linear: ``o = V h``                           (d x d_c parameters; a bias c is optional)
- ffn:    ``o = W2 ReLU(W1 h + b1) + b2``       (d_c x k + k + k x d + d parameters)

The last projection (V, or W2 and b2) starts at zero, so an untrained head adds nothing and the model is
exactly the base model.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

HeadType = Literal["linear", "ffn"]
HEAD_TYPES: tuple[str, ...] = ("linear", "ffn")


@dataclass(frozen=True)
class HeadConfig:
    """head_type: "linear" or "ffn"; d_controller: input width (d_c); d_model: output width (d);
    hidden: the FFN's inner width k (0 for linear heads); bias: whether projections carry biases (default: none
    for linear heads, ``o = V h`` as in the design's equations, so a linear head is exactly d x d_c parameters;
    biases for FFN heads)."""

    head_type: str = "linear"
    d_controller: int = 64
    d_model: int = 384
    hidden: int = 128
    bias: bool | None = None

    def __post_init__(self) -> None:
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}, got {self.head_type!r}")
        if self.bias is None:
            object.__setattr__(self, "bias", self.head_type == "ffn")
        if self.head_type == "linear":
            object.__setattr__(self, "hidden", 0)  # no inner layer: one canonical config per linear shape
        elif self.hidden <= 0:
            raise ValueError(f"an FFN head needs hidden > 0: {self}")
        if self.d_controller <= 0 or self.d_model <= 0:
            raise ValueError(f"head dims must be positive: {self}")

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.head_type == "linear":
            data.pop("hidden")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "HeadConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Head(nn.Module):
    """Base class: maps controller states (..., d_c) to residual corrections (..., d)."""

    config: HeadConfig

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def head_type(self) -> str:
        return self.config.head_type

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LinearHead(Head):
    def __init__(self, config: HeadConfig) -> None:
        if config.head_type != "linear":
            raise ValueError("LinearHead needs head_type='linear'")
        super().__init__(config)
        self.out = nn.Linear(config.d_controller, config.d_model, bias=config.bias)
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., C) -> (..., D)"""
        return self.out(h)


class FFNHead(Head):
    def __init__(self, config: HeadConfig) -> None:
        if config.head_type != "ffn":
            raise ValueError("FFNHead needs head_type='ffn'")
        super().__init__(config)
        self.inp = nn.Linear(config.d_controller, config.hidden, bias=config.bias)
        self.out = nn.Linear(config.hidden, config.d_model, bias=config.bias)
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., C) -> (..., D)"""
        return self.out(torch.relu(self.inp(h)))


# torch's default generator is one per process: a worker training two heads in two threads would interleave their
# seeding and draws (a head made with seed 0 then got another first projection than the prior's). Whoever seeds it
# in hra holds this lock.
GLOBAL_RNG_LOCK = threading.Lock()


def make_head(config: HeadConfig, seed: int | None = 0) -> Head:
    """A fresh head (output projection zero). ``seed`` fixes the FFN's first projection, so heads made with the
    same seed share it (this makes the mean of FFN heads, the population prior, meaningful)."""
    cls = LinearHead if config.head_type == "linear" else FFNHead
    if seed is None:
        return cls(config)
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)
