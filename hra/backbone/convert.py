"""Conversion of CTranslate2 Whisper variables into a ``Whisper`` state dict.

CTranslate2 fuses attention projections: self-attention ``linear_0`` is Q|K|V stacked on the output axis
(3D, D), cross-attention ``linear_0`` is Q and ``linear_1`` is K|V (2D, D); the output projection is the last
linear. Whisper's key projection has no bias, so the fused key-bias slice must be zero. Layer norms are
``gamma``/``beta``. The output projection is an alias of the token embedding (tied weights).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from hra.backbone.whisper_model import WhisperConfig

# Metadata scalars in the WhisperSpec that carry no weights.
_METADATA = {
    "decoder/activation",
    "decoder/alibi",
    "decoder/alignment_heads",
    "decoder/alignment_layer",
    "decoder/num_heads",
    "decoder/pre_norm",
    "decoder/scale_embeddings",
    "decoder/start_from_zero_embedding",
    "encoder/num_heads",
}
_GELU = 3  # ctranslate2::ops::ActivationType::GELU


def config_from_ct2(variables: dict[str, np.ndarray]) -> WhisperConfig:
    """Infer the dimensions from the variables' shapes and the stored head counts."""

    def n_layers(prefix: str) -> int:
        pat = re.compile(rf"^{prefix}/layer_(\d+)/")
        return 1 + max(int(m.group(1)) for name in variables if (m := pat.match(name)))

    if int(variables.get("decoder/activation", _GELU)) != _GELU:
        raise ValueError("only GELU Whisper checkpoints are supported")
    if int(variables.get("decoder/pre_norm", 1)) != 1 or int(variables.get("decoder/scale_embeddings", 0)):
        raise ValueError("unexpected decoder options (need pre-norm, unscaled embeddings)")
    vocab, d = variables["decoder/embeddings/weight"].shape
    return WhisperConfig(
        n_mels=variables["encoder/conv1/weight"].shape[1],
        n_audio_ctx=variables["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=variables["encoder/conv1/weight"].shape[0],
        n_audio_head=int(variables["encoder/num_heads"]),
        n_audio_layer=n_layers("encoder"),
        n_vocab=vocab,
        n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
        n_text_state=d,
        n_text_head=int(variables["decoder/num_heads"]),
        n_text_layer=n_layers("decoder"),
    )


def ct2_to_state_dict(
    variables: dict[str, np.ndarray], cfg: WhisperConfig, key_bias_atol: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Map every CTranslate2 weight onto a ``Whisper(cfg)`` state-dict entry (float32).

    Raises ``ValueError`` when a variable is missing, left unused, mis-shaped, or when a fused key-bias
    slice is not zero.
    """
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in variables:
            raise ValueError(f"missing CTranslate2 variable {name}")
        used.add(name)
        return torch.from_numpy(np.asarray(variables[name], dtype=np.float32).copy())

    sd: dict[str, torch.Tensor] = {}

    def layer_norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = take(f"{src}/gamma")
        sd[f"{dst}.bias"] = take(f"{src}/beta")

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = take(f"{src}/weight")
        sd[f"{dst}.bias"] = take(f"{src}/bias")

    def fused(dst_prefix: str, names: tuple[str, ...], src: str) -> None:
        weight, bias = take(f"{src}/weight"), take(f"{src}/bias")
        parts_w, parts_b = weight.chunk(len(names)), bias.chunk(len(names))
        for name, w, b in zip(names, parts_w, parts_b):
            sd[f"{dst_prefix}.{name}.weight"] = w.contiguous()
            if name == "key":
                if float(b.abs().max()) > key_bias_atol:
                    raise ValueError(f"{src}: key bias is not zero (max {float(b.abs().max())})")
            else:
                sd[f"{dst_prefix}.{name}.bias"] = b.contiguous()

    def ffn(dst: str, src: str) -> None:
        layer_norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    def self_attention(dst: str, src: str) -> None:
        layer_norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        fused(f"{dst}.attn", ("query", "key", "value"), f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = take("encoder/position_encodings/encodings")
    for i in range(cfg.n_audio_layer):
        self_attention(f"encoder.blocks.{i}", f"encoder/layer_{i}")
        ffn(f"encoder.blocks.{i}", f"encoder/layer_{i}")
    layer_norm("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = take("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = take("decoder/position_encodings/encodings")
    for i in range(cfg.n_text_layer):
        src = f"decoder/layer_{i}"
        self_attention(f"decoder.blocks.{i}", src)
        layer_norm(f"decoder.blocks.{i}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"decoder.blocks.{i}.cross_attn.query", f"{src}/attention/linear_0")
        fused(f"decoder.blocks.{i}.cross_attn", ("key", "value"), f"{src}/attention/linear_1")
        linear(f"decoder.blocks.{i}.cross_attn.out", f"{src}/attention/linear_2")
        ffn(f"decoder.blocks.{i}", src)
    layer_norm("decoder.ln", "decoder/layer_norm")

    unused = set(variables) - used - _METADATA
    if unused:
        raise ValueError(f"CTranslate2 variables left unconverted: {sorted(unused)}")
    return sd
