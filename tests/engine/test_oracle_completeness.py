"""Detection on diffviewer's difference against the oracle's, at equal false peaks.

The oracle is issue 12's synthetic pair subtracted with the true kernel and background,
whitened with the true kernel's decorrelation filter (``benchmarks/bench_peers_science.py``);
both differences go through one shared detector (``benchmarks/peer_metrics.py``). At one
threshold a difference that leaves light around stars finds more faint injections and
more false peaks alike, so the two are compared where diffviewer's difference has as
many false peaks as the oracle's at 5 sigma: a kernel fitted from the stars should then
find what the true kernel finds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from diffviewer.exposure import UNUSABLE
from diffviewer.io import read_exposure
from diffviewer.synthetic import make_pair
from tests.engine.helpers import run_as_command

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_peers_science as science_bench
import peer_metrics as pm
from peers import SCIENCE_PAIRS, write_pair_files

pytestmark = pytest.mark.slow

#: The S/N bins pooled, where 5 sigma detection is neither sure nor hopeless.
BINS = ("5-7", "7-10")
#: Seeds of the pair's injections and noise (bench_peers_science's first three): 96
#: injections in BINS each.
SEEDS = (7, 8, 9)


def pooled_found(figures: dict[str, float], suffix: str) -> float:
    """The fraction found over :data:`BINS` (each bin holds as many injections)."""
    return float(np.mean([figures[f"found S/N {b}{suffix}"] for b in BINS]))


def seed_figures(folder: Path, seed: int) -> tuple[float, float, int, int]:
    """On one draw of the constant-PSF pair: the fractions found over :data:`BINS` by the
    decorrelated oracle and by diffviewer's difference, each at the threshold where it
    has the oracle's 5 sigma false peaks, and both 5 sigma false-peak counts."""
    pair = SCIENCE_PAIRS["constant"]
    truth, white, kw, background = science_bench.synthetic_truth(pair, np.random.default_rng(seed))
    science, template = write_pair_files(folder, f"constant{seed}", make_pair(**kw))
    plain = science_bench.oracle(science, template, truth, background)
    oracle, oracle_peaks = pm.score(pm.convolve_same(plain, white.sci_filter), white)
    result = run_as_command(read_exposure(str(science)), read_exposure(str(template)))
    assert result.decorrelation is not None  # scored against the whitened truth
    diff = result.difference.image.astype(np.float64)
    diff[(result.difference.mask & int(UNUSABLE)) != 0] = np.nan
    ours, our_peaks = pm.score(diff, white)
    budget = int(oracle["false peaks"])
    suffix = " at equal false peaks"
    found = [
        pooled_found(pm.found_at_budget(peaks, white.injections, budget), suffix)
        for peaks in (oracle_peaks, our_peaks)
    ]
    return found[0], found[1], budget, int(ours["false peaks"])


def test_at_the_oracles_false_peaks_the_difference_finds_what_the_oracle_finds(
    tmp_path: Path,
) -> None:
    figures = np.array([seed_figures(tmp_path, seed) for seed in SEEDS])
    found_oracle, found_ours = figures[:, 0].mean(), figures[:, 1].mean()
    false_oracle, false_ours = figures[:, 2].sum(), figures[:, 3].sum()
    print(
        f"\nS/N 5-10 found at the oracle's false peaks, {len(SEEDS)} seeds: oracle "
        f"{found_oracle:.3f}, diffviewer {found_ours:.3f} (per seed "
        f"{np.round(figures[:, 1] - figures[:, 0], 3).tolist()}); false peaks at 5 sigma "
        f"{false_oracle:.0f} / {false_ours:.0f}"
    )
    # 288 injections near 0.88 found: each fraction is known to +-0.02 (binomial), and
    # the seeds' gaps scatter by about 0.05, so their mean is known to +-0.03. 0.05 is
    # about two of those: a kernel that left a 2.3 % low sum's light at the stars
    # (HOTPANTS's difference on these seeds, scored the same way: a gap of 0.076) fails.
    assert found_ours >= found_oracle - 0.05
    # Nor is the completeness bought with false peaks: at 5 sigma at most half as many
    # again as the oracle's (a Poisson count of 26 is known to +-5; this guards against a
    # gross excess only: HOTPANTS's 38 on these seeds lies within it too).
    assert false_ours <= 1.5 * false_oracle
