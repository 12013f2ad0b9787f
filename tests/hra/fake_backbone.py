"""A tiny random backbone implementing ``hra.backbone.base.Backbone`` for fast HRA tests.

Front end: 10-ms frames of the waveform through a fixed random projection (``n_mels`` "bands"), pairs of frames
stacked and projected to ``d_model`` (a stride of 2, like Whisper's convolutions). Encoder: pre-norm Transformer
blocks with a key-padding mask. Decoder: one Transformer decoder block over characters.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from hra.backbone.base import DecoderHook, EncoderInput, LayerHook
from hra.backbone.decoding_rules import DecodeResult, compression_ratio

HOP = 160
ALPHABET = "abcdefghijklmnopqrstuvwxyz '"
SOT, EOT, FIRST_CHAR = 0, 1, 2


class FakeBackbone(nn.Module):
    name = "fake-tiny"

    def __init__(self, d_model: int = 32, n_layers: int = 4, n_mels: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.d_model = d_model
        self.n_encoder_layers = n_layers
        self.n_decoder_layers = 1
        self.n_mels = n_mels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.register_buffer("filterbank", torch.randn(HOP, n_mels) / HOP**0.5)
            self.front = nn.Linear(2 * n_mels, d_model)
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(d_model, 2, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True)
                for _ in range(n_layers)
            )
            self.ln_post = nn.LayerNorm(d_model)
            self.embed = nn.Embedding(FIRST_CHAR + len(ALPHABET), d_model)
            self.pos = nn.Parameter(torch.randn(256, d_model) * 0.1)
            self.decoder = nn.TransformerDecoderLayer(d_model, 2, 2 * d_model, dropout=0.0, batch_first=True)
        self.eval().requires_grad_(False)
        digest = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            digest.update(k.encode() + v.numpy().tobytes())
        self.fingerprint = digest.hexdigest()

    # -- Backbone protocol ----------------------------------------------------------------------------------
    def prepare(self, audio: list[torch.Tensor]) -> EncoderInput:
        feats = []
        for wav in audio:
            n = max(1, -(-wav.numel() // (2 * HOP))) * 2  # even number of frames
            frames = F.pad(wav.float(), (0, n * HOP - wav.numel())).view(n, HOP)
            feats.append(torch.log1p((frames @ self.filterbank).abs()).T)  # (n_mels, n)
        longest = max(f.shape[1] for f in feats)
        features = torch.stack([F.pad(f, (0, longest - f.shape[1])) for f in feats])
        frames = torch.tensor([f.shape[1] // 2 for f in feats])
        return EncoderInput(features=features, frames=frames)

    def encode(self, batch: EncoderInput, hook: LayerHook | None = None) -> torch.Tensor:
        b, m, f = batch.features.shape
        x = self.front(batch.features.transpose(1, 2).reshape(b, f // 2, 2 * m))
        pad = torch.arange(x.shape[1])[None, :] >= batch.frames[:, None]
        for i, block in enumerate(self.blocks):
            out = block(x, src_key_padding_mask=pad)
            x = hook(i, x, out) if hook is not None else out
        return self.ln_post(x)

    def token_ids(self, text: str) -> list[int]:
        return [FIRST_CHAR + ALPHABET.index(c) for c in text.lower() if c in ALPHABET]

    def _logits(
        self,
        encoder_out: torch.Tensor,
        tokens: torch.Tensor,
        frames: torch.Tensor | None,
        hook: DecoderHook | None = None,
    ) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        causal = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        pad = None if frames is None else torch.arange(encoder_out.shape[1])[None, :] >= frames[:, None]
        out = self.decoder(x, encoder_out, tgt_mask=causal, memory_key_padding_mask=pad)
        x = hook(0, x, out) if hook is not None else out
        return x @ self.embed.weight.T

    def teacher_forced_loss(
        self,
        encoder_out: torch.Tensor,
        targets: list[list[int]],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> torch.Tensor:
        longest = max(len(t) for t in targets) + 1
        inputs = torch.full((len(targets), longest), EOT)
        labels = torch.full((len(targets), longest), -100)
        for i, t in enumerate(targets):
            seq = [SOT, *t]
            inputs[i, : len(seq)] = torch.tensor(seq)
            labels[i, : len(seq)] = torch.tensor([*t, EOT])
        logits = self._logits(encoder_out, inputs, frames, decoder_hook)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    def decode(
        self,
        encoder_out: torch.Tensor,
        durations_s: list[float],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> list[str]:
        return [r.text for r in self.decode_detailed(encoder_out, durations_s, frames, decoder_hook)]

    def decode_detailed(
        self,
        encoder_out: torch.Tensor,
        durations_s: list[float],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> list[DecodeResult]:
        """Greedy: the chosen tokens' mean log-probability (end-of-text counted when reached); no-speech 0."""
        results = []
        for i, duration in enumerate(durations_s):
            tokens, logprob, reason = [SOT], 0.0, "length"
            hook = decoder_hook.select([i]) if decoder_hook is not None else None
            for _ in range(max(1, int(duration * 15))):
                mem = encoder_out[i : i + 1] if frames is None else encoder_out[i : i + 1, : int(frames[i])]
                logprobs = F.log_softmax(self._logits(mem, torch.tensor([tokens]), None, hook)[0, -1], dim=-1)
                nxt = int(logprobs.argmax())
                logprob += float(logprobs[nxt])
                if nxt == EOT:
                    reason = "eot"
                    break
                tokens.append(nxt)
            text = "".join(ALPHABET[t - FIRST_CHAR] for t in tokens[1:] if t >= FIRST_CHAR)
            counted = len(tokens) - 1 + (reason == "eot")
            results.append(DecodeResult(text, tokens[1:], logprob / max(1, counted), 0.0, compression_ratio(text),
                                        reason))
        return results


def make_fake_foundation(d_controller: int = 8, seed: int = 0, u_init: float = 0.5, include_decoder: bool = False):
    """A Foundation on the fake backbone with a random (seeded) controller."""
    from hra.foundation import Foundation
    from hra.adapter.controller import Controller, ControllerConfig

    backbone = FakeBackbone(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        controller = Controller(
            ControllerConfig(d_model=backbone.d_model, d_controller=d_controller, n_layers=4, u_init=u_init,
                             include_decoder=include_decoder)
        )
    return Foundation.build(backbone, controller, controller_source="test")


WORDS = "the cat sat on a mat while my dog ran far away from home".split()


def fake_utterances(n: int, seed: int = 0) -> list[tuple[torch.Tensor, str]]:
    """n (waveform, transcript) pairs: 0.3-0.9 s of seeded noise and 2-4 words."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        samples = int(torch.randint(4800, 14400, (1,), generator=g))
        n_words = int(torch.randint(2, 5, (1,), generator=g))
        words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n_words,), generator=g)]
        out.append((torch.randn(samples, generator=g) * 0.1, " ".join(words)))
    return out
