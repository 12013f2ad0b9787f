"""The decoding-cost benchmark's command line (its measurement needs the real backbone and a corpus)."""

from __future__ import annotations

import pytest

from hra.bench.decoding_cost import main


@pytest.mark.parametrize("beams", ["0", "1,0", ","])
def test_beam_sizes_below_one_or_none_are_refused(beams):
    with pytest.raises(SystemExit) as exc:
        main(["--beams", beams])
    assert exc.value.code == 2
