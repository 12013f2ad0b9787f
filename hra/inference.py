"""Transcription with per-sample heads: one batched backbone pass serves many speakers.

``transcribe(foundation, waveforms, heads)``: ``heads[i]`` is sample i's head or ``None`` for the base model as
served (no head: no correction, exactly the frozen backbone). Decoding is guarded (length bound by duration,
repetition and compression checks, no-speech handling): the backbone's Python beam search, or CTranslate2's over the
same encoder output when the foundation has a CTranslate2 decoder (``decode_encoded``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hra.backbone.base import Backbone
from hra.backbone.features import HOP_LENGTH, WINDOW_FRAMES
from hra.foundation import Foundation
from hra.adapter.heads import Head
from hra.adapter.hook import HRAHook

SAMPLE_RATE = 16000
# One encoder pass holds at most this many positions (rows x context): 4 utterances in Whisper's 30-s window, ~24
# in the 5-s head context. Per utterance a pass of 4 costs what a pass of 16 does, but peak memory grows with the
# rows (30-s window, one thread: +71 MB for 4, +246 MB for 8, +411 MB for 16 over the loaded model).
MAX_BATCH_POSITIONS = 4 * 1500


def check_head_fits(head: Head, foundation: Foundation) -> None:
    cfg = head.config
    if cfg.d_model != foundation.backbone.d_model or cfg.d_controller != foundation.controller.config.d_controller:
        raise ValueError(
            f"head ({cfg.d_controller}->{cfg.d_model}) does not fit this foundation "
            f"({foundation.controller.config.d_controller}->{foundation.backbone.d_model})"
        )


@torch.inference_mode()
def encode_with_heads(
    foundation: Foundation,
    waveforms: Sequence[torch.Tensor],
    heads: Sequence[Head | None],
    backbone: Backbone | None = None,
):
    """One batched encoder pass -> (encoder output (B, T, D), the EncoderInput used, the decoder hook or None).

    ``backbone``: the backbone view to run (default: the head context's, ``foundation.backbone``). The decoder
    hook carries the heads into the decoder blocks when the controller covers them.
    """
    backbone = backbone or foundation.backbone
    batch = backbone.prepare([w.to(torch.float32) for w in waveforms])
    features = batch.features.to(foundation.device)
    batch = type(batch)(features=features, frames=batch.frames.to(foundation.device))
    if not any(h is not None for h in heads):
        return _encode(backbone, batch, None), batch, None
    hook = HRAHook(foundation.controller, list(heads), frames=batch.frames)
    encoder_out = _encode(backbone, batch, hook)
    return encoder_out, batch, hook.decoder_hook()


def _encode(backbone: Backbone, batch, hook) -> torch.Tensor:
    """``backbone.encode`` in the precision its options ask for at inference (``BackboneOptions.encoder_dtype``);
    float32 out either way."""
    options = getattr(backbone, "options", None)
    if getattr(options, "encoder_dtype", "float32") != "bfloat16":
        return backbone.encode(batch, hook)
    with torch.autocast(device_type=batch.features.device.type, dtype=torch.bfloat16):
        encoder_out = backbone.encode(batch, hook)
    return encoder_out.float()


def decode_encoded(
    foundation: Foundation,
    backbone: Backbone,
    encoder_out: torch.Tensor,
    durations_s: list[float],
    frames: torch.Tensor | None,
    decoder_hook=None,
    detailed: bool = False,
) -> list:
    """Texts (``detailed``: ``DecodeResult``s) of one batch's encoder output, with the foundation's decoder.

    CTranslate2 (``foundation.ct2_decoder_for(backbone)``) decodes unless the heads also run in the decoder blocks
    (``decoder_hook``); the samples its guards flag are decoded again by ``backbone``'s Python decoder."""
    ct2 = foundation.ct2_decoder_for(backbone)
    options = getattr(getattr(backbone, "options", None), "decoding", None)
    if ct2 is None or decoder_hook is not None or options is None:
        if detailed:
            detailed_decode = backbone.decode_detailed  # type: ignore[attr-defined]
            return detailed_decode(encoder_out, durations_s, frames, decoder_hook)
        return backbone.decode(encoder_out, durations_s, frames=frames, decoder_hook=decoder_hook)

    def python_decode(rows: list[int]):
        index = torch.tensor(rows, device=encoder_out.device)
        return backbone.decode_detailed(  # type: ignore[attr-defined]
            encoder_out.index_select(0, index),
            [durations_s[r] for r in rows],
            frames.index_select(0, index) if frames is not None else None,
        )

    results = ct2.decode(encoder_out, frames, durations_s, options, fallback=python_decode)
    return results if detailed else [r.text for r in results]


def encoder_positions(backbone: Backbone, num_samples: int) -> int:
    """Encoder positions an utterance occupies in ``backbone``'s context (its own length when the backbone has no
    context policy)."""
    context = getattr(getattr(backbone, "options", None), "context", None)
    if context is None:
        return max(1, -(-num_samples // (2 * HOP_LENGTH)))  # the encoder's stride-2 convolution halves the frames
    # Longer than the window: counted as the window here; ``prepare`` refuses it with its own error.
    return context.context_frames(min(num_samples // HOP_LENGTH, WINDOW_FRAMES)) // 2


def passes(lengths: list[int], batch_size: int, max_positions: int) -> list[list[int]]:
    """Indices of ``lengths`` (encoder positions, sorted ascending) in consecutive passes of at most ``batch_size``
    rows and ``max_positions`` positions (rows x the longest; one row always fits)."""
    out: list[list[int]] = []
    for i, length in enumerate(lengths):
        if out and len(out[-1]) < batch_size and (len(out[-1]) + 1) * length <= max_positions:
            out[-1].append(i)
        else:
            out.append([i])
    return out


@torch.inference_mode()
def transcribe(
    foundation: Foundation,
    waveforms: list[torch.Tensor],
    heads: list[Head | None] | None = None,
    batch_size: int = 16,
    max_batch_positions: int = MAX_BATCH_POSITIONS,
    detailed: bool = False,
) -> list:
    """Mono float32 16 kHz waveforms (N,) -> texts; passes of at most ``batch_size`` samples and
    ``max_batch_positions`` encoder positions, mixed heads.

    Samples with a head run in the context heads were trained in (one pass for all heads of a batch); samples
    without one get the base model exactly as served (``foundation.serving_base``). ``detailed``: ``DecodeResult``s
    (tokens, average log-probability, no-speech probability) instead of texts.
    """
    if heads is None:
        heads = [None] * len(waveforms)
    if len(heads) != len(waveforms):
        raise ValueError(f"{len(waveforms)} waveforms but {len(heads)} heads")
    if batch_size <= 0 or max_batch_positions <= 0:
        raise ValueError("batch_size and max_batch_positions must be positive")
    for head in heads:
        if head is not None:
            check_head_fits(head, foundation)
    results: list = [None] * len(waveforms)
    adapted = [i for i, h in enumerate(heads) if h is not None]
    base = [i for i, h in enumerate(heads) if h is None]
    for rows_of_kind, backbone in ((adapted, foundation.backbone), (base, foundation.serving_base)):
        # Similar lengths together: less padding; results come back in the caller's order.
        order = sorted(rows_of_kind, key=lambda i: waveforms[i].numel())
        lengths = [encoder_positions(backbone, waveforms[i].numel()) for i in order]
        for members in passes(lengths, batch_size, max_batch_positions):
            rows = [order[m] for m in members]
            encoder_out, batch, decoder_hook = encode_with_heads(
                foundation, [waveforms[i] for i in rows], [heads[i] for i in rows], backbone
            )
            durations = [waveforms[i].numel() / SAMPLE_RATE for i in rows]
            decoded = decode_encoded(foundation, backbone, encoder_out, durations, batch.frames, decoder_hook,
                                     detailed=detailed)
            for i, result in zip(rows, decoded):
                results[i] = result
    return results
