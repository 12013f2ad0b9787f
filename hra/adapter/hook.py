"""The encoder hook that turns a frozen backbone into an HRA model, and batched per-sample heads.

The backbone calls the hook after each encoder block with (layer, x_{l-1}, L_l(x_{l-1})); the hook advances the
controller and returns ``x_l = L_l(x_{l-1}) + head(h_l)``.

Serving mixes speakers in one batch: ``HeadApplier`` stacks each sample's head weights into (B, ...) tensors and
applies them with one batched matmul per head shape (``torch.baddbmm``); samples without a head get no
correction (exactly the base model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hra.adapter.controller import Controller
from hra.adapter.heads import Head

HeadsSpec = Head | Sequence[Head | None] | None


class _Group:
    """Samples whose heads share a shape: unique heads' weights stacked once, gathered per sample."""

    def __init__(self, rows: list[int], heads: list[Head], batch_size: int, device: torch.device) -> None:
        unique: dict[int, int] = {}
        order: list[Head] = []
        which: list[int] = []
        for head in heads:
            key = id(head)
            if key not in unique:
                unique[key] = len(order)
                order.append(head)
            which.append(unique[key])
        self.full = rows == list(range(batch_size))
        self.rows = torch.tensor(rows, dtype=torch.long, device=device)
        index = torch.tensor(which, dtype=torch.long, device=device)
        first = order[0]
        self.head_type = first.head_type

        def stacked(get) -> torch.Tensor | None:  # (U, ...) -> (G, ...) following each row's head
            tensors = [get(h) for h in order]
            if tensors[0] is None:
                return None
            return torch.stack(tensors).index_select(0, index)

        if self.head_type == "linear":
            self.w_out = stacked(lambda h: h.out.weight.transpose(0, 1))  # (G, C, D)
            self.b_out = stacked(lambda h: h.out.bias)  # (G, D)
        else:
            self.w_in = stacked(lambda h: h.inp.weight.transpose(0, 1))  # (G, C, K)
            self.b_in = stacked(lambda h: h.inp.bias)  # (G, K)
            self.w_out = stacked(lambda h: h.out.weight.transpose(0, 1))  # (G, K, D)
            self.b_out = stacked(lambda h: h.out.bias)  # (G, D)

    @staticmethod
    def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """x: (G, T, I), w: (G, I, O), b: (G, O) or None -> (G, T, O)"""
        if b is None:
            return torch.bmm(x, w)
        return torch.baddbmm(b.unsqueeze(1), x, w)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """h: (G, T, C) (already gathered to this group's rows) -> (G, T, D)"""
        if self.head_type == "linear":
            return self._affine(h, self.w_out, self.b_out)
        hidden = torch.relu(self._affine(h, self.w_in, self.b_in))
        return self._affine(hidden, self.w_out, self.b_out)


class HeadApplier:
    """Applies ``heads`` to a batch of controller states.

    heads: one ``Head`` for every sample (training), or a per-sample sequence of ``Head | None`` (serving mixed
    speakers; ``None`` = base model), or ``None`` (no correction at all).
    """

    def __init__(self, heads: HeadsSpec, batch_size: int | None = None, device: torch.device | str = "cpu") -> None:
        self.single: Head | None = None
        self.groups: list[_Group] = []
        self.batch_size = batch_size
        if heads is None or isinstance(heads, Head):
            self.single = heads
            return
        heads = list(heads)
        if batch_size is not None and len(heads) != batch_size:
            raise ValueError(f"got {len(heads)} heads for a batch of {batch_size}")
        self.batch_size = len(heads)
        present = [h for h in heads if h is not None]
        if present and len(heads) == len(present) and all(h is present[0] for h in present):
            self.single = present[0]  # one speaker for the whole batch: a plain matmul
            return
        by_shape: dict[tuple, tuple[list[int], list[Head]]] = {}
        for row, head in enumerate(heads):
            if head is None:
                continue
            cfg = head.config
            key = (cfg.head_type, cfg.d_controller, cfg.d_model, cfg.hidden, cfg.bias)
            rows, members = by_shape.setdefault(key, ([], []))
            rows.append(row)
            members.append(head)
        self.groups = [_Group(rows, members, len(heads), torch.device(device)) for rows, members in by_shape.values()]

    @property
    def is_identity(self) -> bool:
        return self.single is None and not self.groups

    def __call__(self, h: torch.Tensor) -> torch.Tensor | None:
        """h: (B, T, C) -> corrections (B, T, D), or None when no sample has a head."""
        if self.single is not None:
            return self.single(h)
        if not self.groups:
            return None
        if len(self.groups) == 1 and self.groups[0].full:
            return self.groups[0](h)
        out: torch.Tensor | None = None
        for group in self.groups:
            part = group(h.index_select(0, group.rows))
            if out is None:
                out = part.new_zeros(h.shape[0], h.shape[1], part.shape[-1])
            out = out.index_copy(0, group.rows, part)
        return out


class HRAHook:
    """A ``LayerHook``: runs the controller across depth and adds the heads' output to every block's output.

    One hook object serves one ``Backbone.encode`` call (it holds the controller state h_l of that call; layer 0
    resets it). ``frames`` (B,), if given, zeroes the correction on the batch padding beyond each sample's valid
    encoder frames, so that a sample's result does not depend on what it is batched with.
    ``keep_states`` records h_1..h_N for inspection.
    """

    def __init__(
        self,
        controller: Controller,
        heads: HeadsSpec,
        frames: torch.Tensor | None = None,
        keep_states: bool = False,
    ) -> None:
        self.controller = controller
        self.heads = heads
        self.applier = heads if isinstance(heads, HeadApplier) else HeadApplier(heads, device=_device_of(controller))
        self.frames = frames
        self.keep_states = keep_states
        self.states: list[torch.Tensor] = []
        self._h: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None

    def _padding_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.frames is None:
            return None
        if self._mask is None or self._mask.shape[1] != x.shape[1]:
            positions = torch.arange(x.shape[1], device=x.device)
            valid = positions.unsqueeze(0) < self.frames.to(x.device).unsqueeze(1)  # (B, T)
            self._mask = None if bool(valid.all()) else valid.unsqueeze(-1).to(x.dtype)
        return self._mask

    def __call__(self, layer: int, x_prev: torch.Tensor, block_out: torch.Tensor) -> torch.Tensor:
        """x_prev, block_out: (B, T, D) -> x_l (B, T, D)"""
        if layer >= self.controller.config.n_layers:
            raise ValueError(f"the controller covers {self.controller.config.n_layers} layers, got layer {layer}")
        if layer == 0:
            self._h = None
            self.states = []
        if self.applier.is_identity and not self.keep_states:
            return block_out  # no head anywhere: exactly the base model, no controller work
        h = self.controller.step(x_prev, self._h)
        self._h = h
        if self.keep_states:
            self.states.append(h)
        correction = self.applier(h)
        if correction is None:
            return block_out
        mask = self._padding_mask(block_out)
        if mask is not None:
            correction = correction * mask
        return block_out + correction.to(block_out.dtype)

    def decoder_hook(self) -> "DecoderLayersHook | None":
        """The hook for the decoder blocks of the same batch, after ``encode`` ran with this hook: None when the
        controller covers the encoder only, or when no sample has a head (exactly the base decoder)."""
        if not self.controller.config.include_decoder or self.applier.is_identity:
            return None
        if self._h is None:
            raise RuntimeError("decoder_hook() needs the encoder pass first")
        h_last = self._h  # (B, T, C) at the last encoder block
        mask = self._padding_mask(h_last)
        if mask is None:
            start = h_last.mean(dim=1)
        else:
            start = (h_last * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
        if isinstance(self.heads, HeadApplier):
            raise ValueError("a decoder hook needs the heads themselves, not a HeadApplier")
        return DecoderLayersHook(self.controller, self.heads, start)


class DecoderLayersHook:
    """The controller and heads across the decoder blocks (``include_decoder``), per token.

    ``start`` (B, C): the recurrence's state before the first decoder block (the encoder's last state, averaged
    over each utterance's frames). Works for teacher forcing (B, L, D) and for incremental decoding (B, 1, D)
    alike; ``select(rows)`` follows a decoding batch as finished samples leave it.
    """

    def __init__(self, controller: Controller, heads: HeadsSpec, start: torch.Tensor) -> None:
        self.controller = controller
        self.heads = heads
        self.applier = HeadApplier(heads, device=start.device)
        self.start = start
        self._h: torch.Tensor | None = None

    def select(self, rows: list[int]) -> "DecoderLayersHook":
        heads = self.heads if self.heads is None or isinstance(self.heads, Head) else [self.heads[r] for r in rows]
        index = torch.tensor(rows, dtype=torch.long, device=self.start.device)
        return DecoderLayersHook(self.controller, heads, self.start.index_select(0, index))

    def __call__(self, layer: int, x_prev: torch.Tensor, block_out: torch.Tensor) -> torch.Tensor:
        """x_prev, block_out: (B, L, D) -> x_l (B, L, D)"""
        h_prev = self.start.unsqueeze(1).to(x_prev.dtype) if layer == 0 else self._h
        h = self.controller.step(x_prev, h_prev, decoder=True)
        self._h = h
        correction = self.applier(h)
        return block_out if correction is None else block_out + correction.to(block_out.dtype)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
