"""The worker process's services, built once at start-up (or on first use)."""

from __future__ import annotations

import logging
import threading

from app.container import Services, build_services
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_services: Services | None = None


def initialized() -> bool:
    return _services is not None


def init_services(settings: Settings, services: Services | None = None) -> Services:
    """Build (or install) this process's services; sets torch's thread count from the settings."""
    global _services
    with _lock:
        if _services is None:
            try:
                import torch

                torch.set_num_threads(max(1, settings.torch_threads))
            except ImportError:  # pragma: no cover - torch is a runtime dependency
                logger.warning("torch is not importable; thread count not set")
            _services = services or build_services(settings)
        return _services


def get_services() -> Services:
    return _services if _services is not None else init_services(get_settings())


def reset() -> None:
    """Forget this process's services (tests)."""
    global _services
    with _lock:
        _services = None
