"""Per-speaker adaptation baselines on a frozen backbone, compared with HRA heads in the foundation benchmark.

Every baseline is an ``EncoderAdapter``: an ``nn.Module`` whose trainable parameters are the speaker's, with
``encode(batch) -> (B, T, D)`` standing in for ``backbone.encode(batch)``. None of them changes the shared
backbone: the bottleneck adapters use the encoder's layer hook, LoRA and full fine-tuning work on a private
deep copy of the encoder (every other tensor, the decoder's included, is shared, not copied). All start as the
identity: an untrained adapter gives exactly the base model's encoder output.

- ``BottleneckAdapters`` (Houlsby et al. 2019, one adapter after each encoder block):
  ``x_l = L_l(x_{l-1}) + U_l GELU(D_l L_l(x_{l-1}) + b_l) + c_l`` with ``U_l``, ``c_l`` zero-initialized;
  per speaker ``N (2 d m + m + d)`` parameters for bottleneck ``m``.
- ``LoRAEncoder`` (Hu et al. 2021): every ``nn.Linear`` inside the encoder blocks (Whisper: attention query,
  key, value and output projections, the two FFN projections) becomes ``W x + (alpha / r) B A x`` with ``A``
  (r x in) random and ``B`` (out x r) zero; per speaker ``r (in + out)`` parameters per wrapped projection.
- ``FineTunedEncoder``: every encoder parameter trained (front-end convolutions, blocks, final LayerNorm).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from safetensors.torch import save as st_save
from torch import nn

from hra.backbone.base import Backbone, EncoderInput

AdapterKind = Literal["houlsby", "lora", "full_ft"]
ADAPTER_KINDS: tuple[str, ...] = ("houlsby", "lora", "full_ft")


@dataclass(frozen=True)
class EncoderSpec:
    """Where a backbone keeps its encoder's weights.

    owner_attr: attribute of the backbone holding the ``nn.Module`` with all weights (``"model"`` for
    ``WhisperBackbone``), or None when the backbone is itself that module. encoder_prefixes: parameter-name
    prefixes (within the owner) of the encoder, front end included. blocks_prefix: prefix of the encoder blocks,
    whose ``nn.Linear`` modules LoRA wraps.
    """

    owner_attr: str | None
    encoder_prefixes: tuple[str, ...]
    blocks_prefix: str


WHISPER_ENCODER = EncoderSpec(owner_attr="model", encoder_prefixes=("encoder.",), blocks_prefix="encoder.blocks.")


def encoder_spec(backbone: Backbone) -> EncoderSpec:
    """The spec of a known backbone (Whisper); other backbones pass theirs explicitly."""
    from hra.backbone.whisper import WhisperBackbone

    if isinstance(backbone, WhisperBackbone):
        return WHISPER_ENCODER
    raise ValueError(f"no EncoderSpec known for backbone {backbone.name!r}; pass one explicitly")


def _owner(backbone: Backbone, spec: EncoderSpec) -> nn.Module:
    owner = backbone if spec.owner_attr is None else getattr(backbone, spec.owner_attr)
    if not isinstance(owner, nn.Module):
        raise TypeError(f"backbone {backbone.name!r} keeps no nn.Module at {spec.owner_attr!r}")
    return owner


def private_encoder_copy(backbone: Backbone, spec: EncoderSpec) -> tuple[Backbone, nn.Module]:
    """A view of ``backbone`` whose encoder weights are a private deep copy; all other tensors are shared.

    Returns (view, owner copy): ``view.encode`` runs the copied encoder, its decoder is the shared one. The
    original backbone is not touched.
    """
    owner = _owner(backbone, spec)
    memo: dict[int, object] = {}
    for name, tensor in [*owner.named_parameters(), *owner.named_buffers()]:
        if not name.startswith(spec.encoder_prefixes):
            memo[id(tensor)] = tensor  # deepcopy returns memoized objects as they are: shared
    owner_copy = copy.deepcopy(owner, memo)
    if spec.owner_attr is None:
        return owner_copy, owner_copy  # type: ignore[return-value]
    view = copy.copy(backbone)
    setattr(view, spec.owner_attr, owner_copy)
    return view, owner_copy


def encoder_parameters(owner: nn.Module, spec: EncoderSpec) -> Iterator[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in owner.named_parameters() if n.startswith(spec.encoder_prefixes))


@dataclass(frozen=True)
class AdapterConfig:
    """kind: "houlsby" | "lora" | "full_ft"; bottleneck: Houlsby's inner width m; rank / alpha: LoRA's r and
    scale numerator (the update is scaled by alpha / r)."""

    kind: str = "houlsby"
    bottleneck: int = 64
    rank: int = 8
    alpha: float = 16.0

    def __post_init__(self) -> None:
        if self.kind not in ADAPTER_KINDS:
            raise ValueError(f"kind must be one of {ADAPTER_KINDS}, got {self.kind!r}")
        if self.bottleneck <= 0 or self.rank <= 0 or self.alpha <= 0:
            raise ValueError(f"bottleneck, rank and alpha must be positive: {self}")

    def to_dict(self) -> dict:
        return asdict(self)


class EncoderAdapter(nn.Module):
    """Base class: a speaker's trainable parameters and how they change the frozen encoder.

    Subclasses build their modules, then call ``_set_trainable(names)``: those parameters (and only those)
    are the speaker's, whether or not they currently require grad.
    """

    config: AdapterConfig

    def _set_trainable(self, names: list[str]) -> None:
        if not names:
            raise ValueError("an adapter needs trainable parameters")
        named = dict(self.named_parameters())
        self._trainable = list(names)
        for name in names:
            named[name].requires_grad_(True)  # everything else came frozen (copied from, or shared with, the backbone)

    def encode(self, batch: EncoderInput) -> torch.Tensor:  # pragma: no cover - abstract
        """EncoderInput (features (B, n_mels, F), frames (B,)) -> encoder output (B, T, D)."""
        raise NotImplementedError

    def trainable_tensors(self) -> dict[str, torch.Tensor]:
        """The speaker's parameters (what a per-speaker artifact stores)."""
        named = dict(self.named_parameters())
        return {n: named[n] for n in self._trainable}

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.trainable_tensors().values())

    def artifact_bytes(self) -> bytes:
        """The speaker's parameters as float32 safetensors."""
        return tensors_to_bytes(self.trainable_tensors())

    def freeze(self) -> "EncoderAdapter":
        for t in self.trainable_tensors().values():
            t.requires_grad_(False)
        return self


def tensors_to_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    cpu = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    return st_save(cpu)


class _Bottleneck(nn.Module):
    def __init__(self, d_model: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, bottleneck)
        self.up = nn.Linear(bottleneck, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) -> (B, T, D) correction"""
        return self.up(torch.nn.functional.gelu(self.down(x)))


class BottleneckAdapters(EncoderAdapter):
    """Houlsby-style residual adapters after each encoder block, through the backbone's layer hook."""

    def __init__(self, backbone: Backbone, config: AdapterConfig) -> None:
        super().__init__()
        if config.kind != "houlsby":
            raise ValueError("BottleneckAdapters needs kind='houlsby'")
        self.config = config
        self._backbone = (backbone,)  # not a submodule: the backbone stays shared and frozen
        self.adapters = nn.ModuleList(
            _Bottleneck(backbone.d_model, config.bottleneck) for _ in range(backbone.n_encoder_layers)
        )
        device = getattr(backbone, "device", None)
        if device is not None:
            self.adapters.to(device)
        self._set_trainable([n for n, _ in self.named_parameters()])

    @staticmethod
    def expected_parameters(d_model: int, n_layers: int, bottleneck: int) -> int:
        return n_layers * (2 * d_model * bottleneck + bottleneck + d_model)

    def encode(self, batch: EncoderInput) -> torch.Tensor:
        positions = None

        def hook(layer: int, x_prev: torch.Tensor, block_out: torch.Tensor) -> torch.Tensor:
            nonlocal positions
            correction = self.adapters[layer](block_out)
            if positions is None:
                t = torch.arange(block_out.shape[1], device=block_out.device)
                positions = (t[None, :] < batch.frames.to(block_out.device)[:, None]).unsqueeze(-1)
            # Batch padding beyond a sample's frames gets no correction (results independent of batching).
            return block_out + (correction * positions).to(block_out.dtype)

        return self._backbone[0].encode(batch, hook)


class LoRALinear(nn.Module):
    """``W' = W + (alpha / r) B A``: base ``W`` frozen (in the private copy), A (r, in) random, B (out, r) zero.

    ``weight``/``bias`` are properties, so that modules reading a projection's weight directly (fused attention
    kernels) see the adapted one. The forward merges the update first: for long sequences that is cheaper than
    ``x A^T B^T``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as peft and the LoRA reference code

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight + (self.lora_b @ self.lora_a) * self.scale

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)"""
        return torch.nn.functional.linear(x, self.weight, self.bias)


class _PrivateEncoderAdapter(EncoderAdapter):
    """An adapter that trains inside a private copy of the encoder (``owner``); ``_view`` runs it."""

    kind = ""

    def __init__(self, backbone: Backbone, config: AdapterConfig, spec: EncoderSpec | None) -> None:
        super().__init__()
        if config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs kind={self.kind!r}")
        self.config = config
        self.spec = spec or encoder_spec(backbone)
        view, self.owner = private_encoder_copy(backbone, self.spec)
        self._view = (view,)

    def encode(self, batch: EncoderInput) -> torch.Tensor:
        return self._view[0].encode(batch)


class LoRAEncoder(_PrivateEncoderAdapter):
    """LoRA on every ``nn.Linear`` of the encoder blocks, in a private copy of the encoder."""

    kind = "lora"

    def __init__(self, backbone: Backbone, config: AdapterConfig, spec: EncoderSpec | None = None) -> None:
        super().__init__(backbone, config, spec)
        owner_copy, spec = self.owner, self.spec  # its frozen weights (and the shared ones) are not trainable
        self.wrapped: list[str] = []
        targets = [
            (name, module)
            for name, module in owner_copy.named_modules()
            if isinstance(module, nn.Linear) and (name + ".").startswith(spec.blocks_prefix)
        ]
        if not targets:
            raise ValueError(f"no nn.Linear under {spec.blocks_prefix!r} to wrap")
        for name, module in targets:
            parent_name, _, child = name.rpartition(".")
            parent = owner_copy.get_submodule(parent_name)
            setattr(parent, child, LoRALinear(module, config.rank, config.alpha))
            self.wrapped.append(name)
        self._set_trainable([n for n, _ in self.named_parameters() if n.rsplit(".", 1)[-1] in ("lora_a", "lora_b")])

    @staticmethod
    def expected_parameters(shapes: list[tuple[int, int]], rank: int) -> int:
        """shapes: (in, out) of every wrapped projection."""
        return sum(rank * (i + o) for i, o in shapes)


class FineTunedEncoder(_PrivateEncoderAdapter):
    """All encoder weights trained, in a private copy of the encoder."""

    kind = "full_ft"

    def __init__(self, backbone: Backbone, config: AdapterConfig, spec: EncoderSpec | None = None) -> None:
        super().__init__(backbone, config, spec)
        self._set_trainable([f"owner.{n}" for n, _ in encoder_parameters(self.owner, self.spec)])


def make_adapter(
    backbone: Backbone, config: AdapterConfig, spec: EncoderSpec | None = None, seed: int | None = 0
) -> EncoderAdapter:
    """A fresh (identity) adapter of ``config.kind`` for ``backbone``, on the backbone's device.

    ``seed`` fixes the random initial weights (Houlsby's down-projections, LoRA's A) without touching the
    global random state; None draws from it. Never call ``.to()`` on a LoRA or fine-tuned adapter: its module
    holds the backbone's shared tensors.
    """
    cls = {"houlsby": BottleneckAdapters, "lora": LoRAEncoder, "full_ft": FineTunedEncoder}[config.kind]
    args = (backbone, config) if config.kind == "houlsby" else (backbone, config, spec)
    if seed is None:
        return cls(*args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(*args)
