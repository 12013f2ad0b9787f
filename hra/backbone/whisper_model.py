"""A small PyTorch Whisper (encoder-decoder) that the project controls.

Same architecture as openai-whisper's ``model.py``: a pre-norm Transformer encoder over log-mel frames
(two convolutions, sinusoidal positions, N blocks, final LayerNorm) and a pre-norm Transformer decoder with
learned positions, cross-attention to the encoder and an output projection tied to the token embedding.

Differences that matter here: the encoder takes a key-padding mask so a batch of utterances with *cut*
contexts of different lengths gives the same result as one utterance at a time, the encoder exposes a hook
after every block (HRA's residual injection), and the decoder runs one step at a time with a KV cache.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class WhisperConfig:
    """Dimensions of a Whisper checkpoint (tiny.en: 80 mels, d=384, 6 heads, 4+4 layers)."""

    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4
    n_vocab: int = 51864
    n_text_ctx: int = 448
    n_text_state: int = 384
    n_text_head: int = 6
    n_text_layer: int = 4

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"WhisperConfig.{name} must be positive, got {value}")
        if self.n_audio_state % self.n_audio_head:
            raise ValueError("n_audio_state must be divisible by n_audio_head")
        if self.n_text_state % self.n_text_head:
            raise ValueError("n_text_state must be divisible by n_text_head")
        if self.n_audio_state != self.n_text_state:
            raise ValueError("encoder and decoder widths must match (cross-attention)")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# Per-layer decoder cache: self-attention keys/values (B, H, L, Dh) grown one step at a time.
KVCache = list[tuple[torch.Tensor, torch.Tensor]]
# Per-layer cross-attention keys/values (B, H, T, Dh), computed once from the encoder output.
CrossKV = list[tuple[torch.Tensor, torch.Tensor]]


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's encoder position table (length, channels): sin half then cos half."""
    if channels % 2:
        raise ValueError("channels must be even")
    log_inc = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv = torch.exp(-log_inc * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate Q/K/V projections (K has no bias, as in Whisper)."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        if n_state % n_head:
            raise ValueError(f"n_state {n_state} not divisible by n_head {n_head}")
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, H, L, Dh)."""
        b, n, d = x.shape
        return x.view(b, n, self.n_head, d // self.n_head).transpose(1, 2)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D) -> keys, values (B, H, S, Dh)."""
        return self.split(self.key(source)), self.split(self.value(source))

    def attend(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """x (B, L, D) queries against k/v (B, H, S, Dh) -> (B, L, D).

        mask: boolean, broadcastable to (B, H, L, S), True where attention is allowed.
        """
        q = self.split(self.query(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        b, h, n, dh = out.shape
        return self.out(out.transpose(1, 2).reshape(b, n, h * dh))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + MLP block: (B, T, D) -> (B, T, D)."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.attn_ln(x)
        k, v = self.attn.project_kv(h)
        x = x + self.attn.attend(h, k, v, mask=mask)
        return x + self.mlp(self.mlp_ln(x))


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention + cross-attention + MLP block."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head)
        self.cross_attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(
        self,
        x: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        cross_mask: torch.Tensor | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, L, D); with ``cache`` the L new positions follow the cached ones (incremental decoding).

        Returns the block output (B, L, D) and the updated self-attention cache.
        """
        h = self.attn_ln(x)
        k, v = self.attn.project_kv(h)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        # Causal over the new positions only; all cached positions are in the past.
        causal = x.shape[1] > 1
        if causal and cache is not None:
            raise ValueError("multi-token steps with a cache are not supported")
        x = x + self.attn.attend(h, k, v, causal=causal)
        x = x + self.cross_attn.attend(self.cross_attn_ln(x), cross_kv[0], cross_kv[1], mask=cross_mask)
        x = x + self.mlp(self.mlp_ln(x))
        return x, (k, v)


class AudioEncoder(nn.Module):
    """Log-mel frames (B, n_mels, 2T) -> encoder states (B, T, D), T <= n_audio_ctx."""

    def __init__(self, cfg: WhisperConfig) -> None:
        super().__init__()
        d = cfg.n_audio_state
        self.conv1 = nn.Conv1d(cfg.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.n_audio_ctx, d))
        self.blocks = nn.ModuleList(EncoderBlock(d, cfg.n_audio_head) for _ in range(cfg.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)

    def front_end(self, features: torch.Tensor) -> torch.Tensor:
        """x_0 = f(audio): (B, n_mels, F) -> (B, ceil(F/2), D), convolutions + GELU + positions."""
        x = F.gelu(self.conv1(features))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        t = x.shape[1]
        if t > self.positional_embedding.shape[0]:
            raise ValueError(f"{t} encoder positions exceed the context of {self.positional_embedding.shape[0]}")
        return x + self.positional_embedding[:t]

    def forward(
        self,
        features: torch.Tensor,
        frames: torch.Tensor | None = None,
        hook=None,
    ) -> torch.Tensor:
        """features (B, n_mels, F); frames (B,) valid positions per sample (None: all valid).

        ``hook(layer, x_prev, block_out) -> x_l`` replaces each block's output (HRA injection).
        """
        x = self.front_end(features)
        mask = key_padding_mask(frames, x.shape[1])
        for i, block in enumerate(self.blocks):
            out = block(x, mask)
            x = hook(i, x, out) if hook is not None else out
        return self.ln_post(x)


class TextDecoder(nn.Module):
    """Tokens (B, L) + encoder states -> logits (B, L, V)."""

    def __init__(self, cfg: WhisperConfig) -> None:
        super().__init__()
        d = cfg.n_text_state
        self.token_embedding = nn.Embedding(cfg.n_vocab, d)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.n_text_ctx, d))
        self.blocks = nn.ModuleList(DecoderBlock(d, cfg.n_text_head) for _ in range(cfg.n_text_layer))
        self.ln = nn.LayerNorm(d)

    def cross_kv(self, encoder_out: torch.Tensor) -> CrossKV:
        """Encoder output (B, T, D) -> per-layer cross-attention keys/values (B, H, T, Dh)."""
        return [block.cross_attn.project_kv(encoder_out) for block in self.blocks]

    def forward(
        self,
        tokens: torch.Tensor,
        cross_kv: CrossKV,
        cross_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        hook=None,
    ) -> tuple[torch.Tensor, KVCache]:
        """tokens (B, L) at positions offset..offset+L-1, offset = cached length.

        ``hook(layer, x_prev, block_out) -> x_l`` replaces each block's output (HRA across the decoder layers;
        it works per position, so incremental decoding and teacher forcing agree).
        Returns logits (B, L, V) and the new cache (one (k, v) per layer).
        """
        offset = cache[0][0].shape[2] if cache else 0
        if offset + tokens.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(f"decoder context of {self.positional_embedding.shape[0]} tokens exceeded")
        x = self.token_embedding(tokens) + self.positional_embedding[offset : offset + tokens.shape[1]]
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            out, kv = block(x, cross_kv[i], cross_mask, cache[i] if cache else None)
            x = hook(i, x, out) if hook is not None else out
            new_cache.append(kv)
        x = self.ln(x)
        return x @ self.token_embedding.weight.T, new_cache


class Whisper(nn.Module):
    """Encoder + decoder, built from a ``WhisperConfig``."""

    def __init__(self, cfg: WhisperConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = AudioEncoder(cfg)
        self.decoder = TextDecoder(cfg)


def key_padding_mask(frames: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """(B,) valid lengths -> boolean attention mask (B, 1, 1, length), True = attend; None if all valid."""
    if frames is None:
        return None
    frames = frames.to(torch.long)
    if bool((frames >= length).all()):
        return None
    positions = torch.arange(length, device=frames.device)
    return (positions[None, :] < frames[:, None])[:, None, None, :]
