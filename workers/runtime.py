"""The worker process's services, built once at start-up (or on first use)."""

from __future__ import annotations

import threading

from app.container import Services, build_services
from app.settings import Settings, get_settings

_lock = threading.Lock()
_services: Services | None = None


def initialized() -> bool:
    return _services is not None


def init_services(settings: Settings, services: Services | None = None) -> Services:
    """Build (or install) this process's services (the ML service sets torch's thread count when it loads)."""
    global _services
    with _lock:
        if _services is None:
            _services = services or build_services(settings)
        return _services


def get_services() -> Services:
    return _services if _services is not None else init_services(get_settings())


def reset() -> None:
    """Forget this process's services (tests)."""
    global _services
    with _lock:
        _services = None
