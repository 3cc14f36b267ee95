"""DIA source ids across runs: an exposure id derived from the pair unless the config
gives one, so the catalogs of a night's pairs, merged, keep distinct ids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diffviewer.config import SubtractionConfig
from diffviewer.engine.ids import FROM_CONFIG, FROM_PAIR, ID_BITS, pair_exposure_id
from diffviewer.engine.pipeline import SubtractionResult, run_subtraction
from diffviewer.outputs import write_outputs
from diffviewer.synthetic import make_pair

DIGEST = SubtractionConfig().digest()
#: The default exposure id field's bits (measurement.exposure_bits).
BITS = SubtractionConfig().measurement.exposure_bits


def _images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(100.0, 10.0, (64, 48)).astype(np.float32),
        rng.normal(100.0, 10.0, (64, 48)).astype(np.float32),
    )


def test_a_pair_s_id_is_its_own_and_the_same_on_every_call() -> None:
    science, template = _images(1)
    first = pair_exposure_id(science, template, DIGEST, 32)
    assert pair_exposure_id(science.copy(), template.copy(), DIGEST, 32) == first
    assert 0 <= first < 2**31  # the field's top bit 0: ids fit a signed 64-bit integer
    touched = science.copy()
    touched[10, 20] = np.nextafter(touched[10, 20], np.float32(np.inf))  # one pixel, 1 ulp
    other_template = _images(2)[1]
    others = {
        "a pixel changed": pair_exposure_id(touched, template, DIGEST, 32),
        "another template": pair_exposure_id(science, other_template, DIGEST, 32),
        "the images swapped": pair_exposure_id(template, science, DIGEST, 32),
        "another config": pair_exposure_id(science, template, "0123456789ab", 32),
        # the same bytes read as another shape or dtype are another pair
        "another shape": pair_exposure_id(science.reshape(48, 64), template, DIGEST, 32),
        "another dtype": pair_exposure_id(science.view(np.int32), template, DIGEST, 32),
    }
    assert first not in others.values(), others
    assert len(set(others.values())) == len(others)
    # a big-endian copy of the pixels is the same pair (the hash reads them little-endian)
    swapped = science.astype(science.dtype.newbyteorder(">"))
    assert pair_exposure_id(swapped, template, DIGEST, 32) == first
    # fewer bits keep the low bits of the same hash
    assert pair_exposure_id(science, template, DIGEST, 12) == first & (2**11 - 1)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, ID_BITS - 2),
    science=hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int16]),
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
    ),
    template=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8)),
    digest=st.text(max_size=16),
)
def test_a_derived_id_fits_its_bits(
    bits: int, science: np.ndarray, template: np.ndarray, digest: str
) -> None:
    exposure_id = pair_exposure_id(science, template, digest, bits)
    assert 0 <= exposure_id < 2 ** (bits - 1)  # every id below 2**63
    assert pair_exposure_id(science, template, digest, bits) == exposure_id


@pytest.fixture(scope="module")
def runs() -> dict[str, SubtractionResult]:
    """Two synthetic pairs under the default config, the first twice and once more with
    ``measurement.exposure_id`` = 5."""
    first = make_pair((256, 256), 150, seed=7, transients=[(128.3, 97.6, 2e4)])
    second = make_pair((256, 256), 150, seed=8, transients=[(60.4, 180.2, 2e4)])
    default = SubtractionConfig()
    given = dataclasses.replace(
        default, measurement=dataclasses.replace(default.measurement, exposure_id=5)
    )
    return {
        "first": run_subtraction(first.science, first.template),
        "first again": run_subtraction(first.science, first.template, default),
        "second": run_subtraction(second.science, second.template),
        "first, id 5": run_subtraction(first.science, first.template, given),
    }


def _ids(result: SubtractionResult) -> np.ndarray:
    ids = np.asarray(result.diasources["id"])
    assert ids.dtype == np.uint64 and len(ids) > 0
    return ids


def _exposure_ids(result: SubtractionResult) -> set[int]:
    """The exposure ids in the high bits of a catalog's ids."""
    bits = result.config.measurement.exposure_bits
    return {int(i) for i in _ids(result) >> np.uint64(ID_BITS - bits)}


def _derived(result: SubtractionResult) -> int:
    """The pair's exposure id as :func:`pair_exposure_id` derives it from the pixels the
    engine subtracted (the template on the science grid) and the default config."""
    return pair_exposure_id(result.science.image, result.template.exposure.image, DIGEST, BITS)


def test_two_pairs_under_the_default_config_share_no_id(runs) -> None:
    first, second = runs["first"], runs["second"]
    assert not set(_ids(first).tolist()) & set(_ids(second).tolist())
    for result in (first, second):
        # the catalog says which exposure id its ids carry; the config is the run's as
        # given (-1), so its digest, which a batch's rerun compares, is unmoved
        assert _exposure_ids(result) == {_derived(result), result.diasources.meta["exposure_id"]}
        assert int(_ids(result).max()) < 2**63  # a signed 64-bit integer holds every id
        assert result.config == SubtractionConfig()
        assert result.config.measurement.derives_exposure_id


def test_the_same_pair_and_config_give_the_same_ids_on_a_rerun(runs) -> None:
    first, again = runs["first"], runs["first again"]
    np.testing.assert_array_equal(_ids(first), _ids(again))
    assert _exposure_ids(again) == {_derived(first)}


def test_an_exposure_id_given_takes_the_place_of_the_pair_s(runs) -> None:
    assert _exposure_ids(runs["first"]) == {_derived(runs["first"])} != {5}
    result = runs["first, id 5"]
    assert _exposure_ids(result) == {5}
    # the running number below it, as before
    low = _ids(result) & np.uint64(2 ** (ID_BITS - BITS) - 1)
    np.testing.assert_array_equal(low, np.arange(1, len(low) + 1))


@pytest.mark.parametrize(
    ("name", "source"), [("first", FROM_PAIR), ("second", FROM_PAIR), ("first, id 5", FROM_CONFIG)]
)
def test_metadata_records_the_exposure_id_and_where_it_came_from(
    runs, tmp_path: Path, name: str, source: str
) -> None:
    result = runs[name]
    write_outputs(result, tmp_path / "out", (), products="minimal")
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    (exposure_id,) = _exposure_ids(result)
    assert meta["measurement"] == {
        "exposure_id": exposure_id,
        "exposure_bits": BITS,
        "exposure_id_from": source,
    }
    assert meta["config_digest"] == result.config.digest()
