"""Peak resident memory of this process (all its threads), for tests that bound what a request may allocate.

Linux keeps the peak (``VmHWM`` in /proc/self/status) and resets it to the current size when "5" is written to
/proc/self/clear_refs, so each measurement starts from now rather than from whatever the test run peaked at
before (``ru_maxrss`` cannot be reset, and would hide any growth below an earlier peak).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise AssertionError(f"{field} missing from {STATUS}")


@dataclass
class PeakGrowth:
    mb: float = 0.0  # peak RSS during the block minus RSS at its start, in MiB


@contextmanager
def peak_rss_growth() -> Iterator[PeakGrowth]:
    """Measure how far the process's resident memory rose above its size at the start of the block."""
    CLEAR_REFS.write_text("5")  # peak := current; fails loudly where the kernel does not allow it
    start = _status_mb("VmRSS")
    result = PeakGrowth()
    try:
        yield result
    finally:
        result.mb = _status_mb("VmHWM") - start
