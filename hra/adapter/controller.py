"""The HRA controller: an IndRNN run across the encoder's depth, shared by every speaker.

Per frame and per layer ``l`` (1-based in the equations, 0-based in code)::

    h_l = ReLU(W x_{l-1} + u * h_{l-1} + b),   h_0 = 0

``W`` is (d_c, d), ``u`` and ``b`` are (d_c,); the same parameters serve every layer (the recurrence runs over
depth, not time), so the controller is tiny (384 x 64 + 2 x 64 floats for Whisper tiny.en).

With ``include_decoder`` the recurrence goes on across the decoder blocks, per token, with its own ``W'``,
``b'``, ``u'`` (the decoder's residual stream is another space than the encoder's); its start state is the
mean over the utterance's frames of the last encoder state ``h_N``, so every token sees a summary of the voice.
The same per-speaker head reads the states of both stacks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ControllerConfig:
    """Shape and initialization of the controller.

    d_model: width of the backbone's residual stream (d).
    d_controller: controller state width (d_c).
    n_layers: encoder blocks the controller runs across (all of the backbone's encoder blocks).
    u_init: initial value of the diagonal recurrent weight u (0 disables the recurrence: the "u = 0" ablation
        keeps it at 0 with ``train_u=False``).
    train_u: whether u is trained.
    include_decoder: whether the controller also runs across the decoder layers (see the module's doc).
    """

    d_model: int
    d_controller: int = 64
    n_layers: int = 4
    u_init: float = 0.5
    train_u: bool = True
    include_decoder: bool = False

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.d_controller <= 0 or self.n_layers <= 0:
            raise ValueError(f"controller dims must be positive: {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ControllerConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Controller(nn.Module):
    """IndRNN over depth. ``step`` advances one layer; the hook calls it once per encoder block."""

    def __init__(self, config: ControllerConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.d_model, config.d_controller)  # W and b
        self.u = nn.Parameter(torch.full((config.d_controller,), float(config.u_init)), requires_grad=config.train_u)
        if config.include_decoder:
            self.proj_dec = nn.Linear(config.d_model, config.d_controller)
            self.u_dec = nn.Parameter(
                torch.full((config.d_controller,), float(config.u_init)), requires_grad=config.train_u
            )

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def step(self, x_prev: torch.Tensor, h_prev: torch.Tensor | None, decoder: bool = False) -> torch.Tensor:
        """x_prev: (B, T, D) block input x_{l-1}; h_prev: (B, T, C) (or broadcastable, e.g. (B, 1, C)) or None for
        h_0 = 0 -> h_l (B, T, C). ``decoder``: a decoder block's step (``include_decoder`` only)."""
        if decoder and not self.config.include_decoder:
            raise ValueError("this controller does not cover the decoder layers")
        proj, u = (self.proj_dec, self.u_dec) if decoder else (self.proj, self.u)
        pre = proj(x_prev)
        if h_prev is not None:
            pre = pre + u * h_prev
        return torch.relu(pre)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Block inputs [x_0 .. x_{N-1}], each (B, T, D) -> controller states [h_1 .. h_N], each (B, T, C)."""
        hs: list[torch.Tensor] = []
        h: torch.Tensor | None = None
        for x in xs:
            h = self.step(x, h)
            hs.append(h)
        return hs

    def fingerprint(self) -> str:
        """sha256 over the config and the weights (name, dtype, shape, float32 bytes), in name order."""
        return tensors_fingerprint(self.state_dict(), self.config.to_dict())


def tensors_fingerprint(tensors: dict[str, torch.Tensor], config: dict | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(config or {}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()
