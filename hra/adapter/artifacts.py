"""Safetensors artifacts for heads and the controller, with JSON metadata binding them to a foundation.

A head artifact is a safetensors file whose metadata holds one JSON record under the key ``hra``::

    {"format": "hra-head", "version": 1, "head_type": ..., "config": {...}, "num_parameters": ...,
     "foundation_fingerprint": ..., "backbone_fingerprint": ..., "controller_fingerprint": ...,
     "backbone_name": ..., "created_at": ISO-8601 UTC, "metadata": {... caller's record ...}}

``head_from_bytes`` refuses an artifact made for another foundation (``FoundationMismatch``). The controller is
stored the same way (format ``hra-controller``, with its config and fingerprint).

This module knows a foundation only by its fingerprints (``FoundationIdentity``, which ``hra.foundation.Foundation``
satisfies): the foundation depends on these artifacts, not the other way round.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hra.backbone.base import Backbone
from hra.errors import FoundationMismatch, InvalidArtifact
from hra.adapter.controller import Controller, ControllerConfig
from hra.adapter.heads import Head, HeadConfig, make_head

FORMAT_VERSION = 1
_META_KEY = "hra"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pack(tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> bytes:
    cpu = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    return st_save(cpu, metadata={_META_KEY: json.dumps(record, sort_keys=True)})


def _unpack(data: bytes, expected_format: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        tensors = st_load(data)
        record = read_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise InvalidArtifact(f"not a safetensors HRA artifact: {exc}") from exc
    if record.get("format") != expected_format:
        raise InvalidArtifact(f"expected an {expected_format} artifact, got {record.get('format')!r}")
    return tensors, record


def read_metadata(data: bytes) -> dict[str, Any]:
    """The JSON record of an artifact without loading its tensors (the safetensors header only)."""
    if len(data) < 8:
        raise InvalidArtifact("artifact too short")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise InvalidArtifact("corrupt safetensors header")
    try:
        header = json.loads(data[8 : 8 + header_len])
        return json.loads(header["__metadata__"][_META_KEY])
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArtifact("no HRA metadata in this safetensors file") from exc


# ---- heads -------------------------------------------------------------------------------------------------


class FoundationIdentity(Protocol):
    """What a head artifact is bound to: the foundation's fingerprint, its parts' (the backbone's name and
    fingerprint, the controller's) and the device a loaded head goes to. ``hra.foundation.Foundation`` is one."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def controller_fingerprint(self) -> str: ...

    @property
    def backbone(self) -> Backbone: ...

    @property
    def device(self) -> torch.device: ...


def head_to_bytes(head: Head, foundation: FoundationIdentity, metadata: dict[str, Any] | None = None) -> bytes:
    """Serialize a head bound to ``foundation``; ``metadata`` (JSON-serializable) is stored as given."""
    record = {
        "format": "hra-head",
        "version": FORMAT_VERSION,
        "head_type": head.head_type,
        "config": head.config.to_dict(),
        "num_parameters": head.num_parameters,
        "foundation_fingerprint": foundation.fingerprint,
        "backbone_fingerprint": foundation.backbone.fingerprint,
        "controller_fingerprint": foundation.controller_fingerprint,
        "backbone_name": foundation.backbone.name,
        "created_at": _now(),
        "metadata": metadata or {},
    }
    return _pack(head.state_dict(), record)


def head_from_bytes(data: bytes, foundation: FoundationIdentity) -> Head:
    """Rebuild a head, refusing one trained for another backbone or controller (``FoundationMismatch``)."""
    tensors, record = _unpack(data, "hra-head")
    if record.get("foundation_fingerprint") != foundation.fingerprint:
        differs = [
            part
            for part, theirs, ours in (
                ("backbone", record.get("backbone_fingerprint"), foundation.backbone.fingerprint),
                ("controller", record.get("controller_fingerprint"), foundation.controller_fingerprint),
            )
            if theirs != ours
        ] or ["foundation"]
        raise FoundationMismatch(
            f"this head was trained for foundation {str(record.get('foundation_fingerprint'))[:12]} "
            f"({record.get('backbone_name')}), not the loaded {foundation.fingerprint[:12]} "
            f"({foundation.backbone.name}); the {' and '.join(differs)} differ. Re-train the head."
        )
    config = HeadConfig.from_dict(record["config"])
    head = make_head(config, seed=None)
    try:
        head.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise InvalidArtifact(f"head tensors do not match their config: {exc}") from exc
    return head.to(foundation.device).requires_grad_(False)


# ---- controller --------------------------------------------------------------------------------------------


def controller_to_bytes(controller: Controller, metadata: dict[str, Any] | None = None) -> bytes:
    record = {
        "format": "hra-controller",
        "version": FORMAT_VERSION,
        "config": controller.config.to_dict(),
        "fingerprint": controller.fingerprint(),
        "num_parameters": controller.num_parameters,
        "created_at": _now(),
        "metadata": metadata or {},
    }
    return _pack(controller.state_dict(), record)


def controller_from_bytes(data: bytes) -> Controller:
    tensors, record = _unpack(data, "hra-controller")
    controller = Controller(ControllerConfig.from_dict(record["config"]))
    try:
        controller.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise InvalidArtifact(f"controller tensors do not match their config: {exc}") from exc
    if record.get("fingerprint") and record["fingerprint"] != controller.fingerprint():
        raise InvalidArtifact("controller weights do not match the fingerprint recorded with them")
    return controller


def save_controller(controller: Controller, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(controller_to_bytes(controller, metadata))
    tmp.replace(path)


def load_controller(path: str | Path) -> Controller:
    return controller_from_bytes(Path(path).read_bytes())
