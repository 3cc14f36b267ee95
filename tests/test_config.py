"""Config: validation with named values, TOML round trip, --set overrides, metadata for the GUI."""

import dataclasses

import pytest

from diffviewer import config as cfg
from diffviewer.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path) -> None:
    original = cfg.apply_overrides(
        cfg.SubtractionConfig(),
        ["kernel.spatial_order=1", "kernel.degrees=[3, 1]", "score.method=al"],
    )
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml(original))
    loaded = cfg.load_toml(path)
    assert loaded == original
    assert loaded.kernel.degrees == (3, 1)
    assert loaded.digest() == original.digest() != cfg.SubtractionConfig().digest()


def test_the_digest_is_of_the_values_not_their_documentation(monkeypatch) -> None:
    # A reworded help text changed every digest, so a batch rerun after an update took
    # every finished pair for one made with another config and ran it again.
    config = cfg.apply_overrides(cfg.SubtractionConfig(), ["kernel.spatial_order=1"])
    before = config.digest()
    monkeypatch.setattr(cfg, "to_toml", lambda c: "# reworded\n" + str(c.to_dict()))
    assert config.digest() == before
    assert cfg.apply_overrides(config, ["kernel.spatial_order=2"]).digest() != before


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("kernel.spatial_order=9", "kernel.spatial_order = 9"),
        ("kernel.min_size=12", "must be odd"),
        ("score.method=magic", "choose one of"),
        ("warp.required_template_fraction=1.5", "above its maximum"),
        ("kernel.nothing=1", "unknown config field kernel.nothing"),
        ("nosection.x=1", "unknown config section"),
        ("kernel.spatial_order=true", "expected a whole number"),
        ("candidates.snr_max=5", "must exceed"),
        # 2**39 at 40 bits: ids of 2**63 and more, beyond a signed 64-bit integer
        ("measurement.exposure_id=549755813888", "with the top one 0 \\(largest 549755813887\\)"),
        ("kernel-spatial", "expected section.field=value"),
        ("detection.threshold=nan", "expected a finite number"),
        ("warp.required_template_fraction=nan", "expected a finite number"),
        # an unclosed list was read as the string '[4,2' and refused as "expected a list"
        ("kernel.degrees=[4,2", r"\[4,2 is not valid TOML \(Unclosed array"),
    ],
)
def test_bad_values_are_named(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        cfg.apply_overrides(cfg.SubtractionConfig(), [override])


def test_cross_section_rule() -> None:
    with pytest.raises(ConfigError, match="detect_on"):
        cfg.apply_overrides(
            cfg.SubtractionConfig(), ["detection.detect_on=score", "score.method=none"]
        )
    ok = cfg.apply_overrides(
        cfg.SubtractionConfig(), ["detection.detect_on=difference", "score.method=none"]
    )
    assert ok.score.method == "none"


def test_a_field_given_two_values_is_refused_in_either_order() -> None:
    # The last of two values won, so the order of the overrides decided the config.
    for values in ((1, 2), (2, 1)):
        overrides = [f"kernel.spatial_order={v}" for v in values]
        with pytest.raises(
            ConfigError, match=r"kernel\.spatial_order is given twice.*give it once"
        ):
            cfg.apply_overrides(cfg.SubtractionConfig(), overrides)
    same = cfg.apply_overrides(cfg.SubtractionConfig(), ["kernel.spatial_order=1"] * 2)
    assert same.kernel.spatial_order == 1


def test_bad_toml_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[kernel\nspatial_order = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        cfg.load_toml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.load_toml(tmp_path / "missing.toml")


def test_every_field_is_documented_with_limits() -> None:
    for section in cfg.SECTION_TYPES:
        for f in cfg.field_specs(section):
            assert f.metadata["doc"], f"{section}.{f.name} has no doc"
            if f.type in ("int", "float"):
                assert f.metadata["min"] is not None, f"{section}.{f.name} has no minimum"


def test_configs_are_frozen() -> None:
    c = cfg.SubtractionConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.kernel.spatial_order = 0  # type: ignore[misc]


def test_overrides_that_change_together_do_not_depend_on_their_order() -> None:
    pair = ["score.method=none", "detection.detect_on=difference"]
    for order in (pair, pair[::-1]):
        c = cfg.apply_overrides(cfg.SubtractionConfig(), order)
        assert (c.score.method, c.detection.detect_on) == ("none", "difference")


def test_a_folder_as_config_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        cfg.load_toml(tmp_path)


# The audit of the command line of 2026-12-07: config files as users have them.


def test_an_empty_config_file_is_refused_with_the_redirect_that_empties_it(tmp_path) -> None:
    # `diffviewer config --config my.toml > my.toml`: the shell empties my.toml before it
    # is read; read as the defaults, the user's values were lost without a word.
    path = tmp_path / "my.toml"
    path.write_text("  \n")
    with pytest.raises(ConfigError, match=r"my\.toml is empty.*> FILE.*another file"):
        cfg.load_toml(path)


def test_a_config_file_in_another_encoding_is_named_as_such(tmp_path) -> None:
    text = "[kernel]\nspatial_order = 1\n"
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Windows' Notepad saves UTF-8
    assert cfg.load_toml(bom).kernel.spatial_order == 1
    wide = tmp_path / "wide.toml"
    wide.write_text(text, encoding="utf-16")
    with pytest.raises(
        ConfigError, match=r"wide\.toml is not UTF-8 text.*UTF-16.*save it as UTF-8"
    ):
        cfg.load_toml(wide)


def test_misspelt_and_misplaced_names_say_what_was_meant() -> None:
    with pytest.raises(ConfigError, match=r"kernel\.spatial_ordr \(did you mean spatial_order\?\)"):
        cfg.from_dict({"kernel": {"spatial_ordr": 1}})
    with pytest.raises(ConfigError, match=r"\[kernal\] \(did you mean kernel\?\)"):
        cfg.from_dict({"kernal": {"spatial_order": 1}})
    # a field written above every table (it was "unknown config section [spatial_order]")
    with pytest.raises(ConfigError, match=r"spatial_order = 1 is outside any section.*\[kernel\]"):
        cfg.from_dict({"spatial_order": 1})


def test_one_value_written_two_ways_is_given_once() -> None:
    c = cfg.apply_overrides(
        cfg.SubtractionConfig(), ["kernel.width_ratio=2", "kernel.width_ratio=2.0"]
    )
    assert c.kernel.width_ratio == 2.0
    with pytest.raises(ConfigError, match="given twice"):
        cfg.apply_overrides(cfg.SubtractionConfig(), ["score.method=al", "score.method=zogy"])
    # true is no 1 (bool is an int in Python: the pair passed as one value)
    with pytest.raises(ConfigError, match="given twice"):
        cfg.apply_overrides(cfg.SubtractionConfig(), ["kernel.wing=true", "kernel.wing=1"])
    # a number out of a float's range written two ways is one too, refused for its range
    # (it was "given twice, as 1e400 and 1.0e400"); 1e-400 is not 0
    with pytest.raises(ConfigError, match=r"= 1\.0e400 overflows a float"):
        cfg.apply_overrides(
            cfg.SubtractionConfig(),
            ["kernel.max_kernel_sum_sigma=1e400", "kernel.max_kernel_sum_sigma=1.0e400"],
        )
    with pytest.raises(ConfigError, match="given twice, as 1e-400 and 1e-40"):
        cfg.apply_overrides(
            cfg.SubtractionConfig(),
            ["kernel.max_kernel_sum_sigma=1e-400", "kernel.max_kernel_sum_sigma=1e-40"],
        )


@pytest.mark.parametrize("text", ["Inf", "-INF", "Infinity", "inf"])
def test_a_written_infinity_is_no_overflow(text: str) -> None:
    # "inf" in any case is a float's infinity as written, refused as not finite: "Inf"
    # was read as a literal that overflows ("the largest is about 1.8e308")
    assert type(cfg.read_float(text)) is float


# The audit of the command line of 2026-12-08: a value is shown as TOML spells it.


@pytest.mark.parametrize(
    ("written", "message"),
    [
        # read by tomllib as inf, it was shown as "inf: expected a finite number"
        (
            "[kernel]\nmax_kernel_sum_sigma = 1e400",
            "kernel.max_kernel_sum_sigma = 1e400 overflows a float (the largest is about "
            "1.8e308); give a finite number",
        ),
        (
            "[kernel]\nmax_kernel_sum_sigma = -1_0e400",
            "kernel.max_kernel_sum_sigma = -1_0e400 overflows a float",
        ),
        ("[kernel]\nmax_kernel_sum_sigma = inf", "kernel.max_kernel_sum_sigma = inf: expected a"),
        # read by tomllib as 0.0, it was run with 0 (a minimum of 0) or refused as 0.0
        (
            "[warp]\ngrid_tolerance = 1e-400",
            "warp.grid_tolerance = 1e-400 underflows a float (below about 2.2e-308 a float "
            "loses digits, and below about 4.9e-324 it is 0.0); give 0, or a number of "
            "magnitude at least 2.2e-308",
        ),
        (
            "[kernel]\nmax_kernel_sum_sigma = -1_0e-400",
            "kernel.max_kernel_sum_sigma = -1_0e-400 underflows a float",
        ),
        # a subnormal: 2.5e-320 holds 13 bits of the 53 a float has
        ("[warp]\ngrid_tolerance = 2.5e-320", "warp.grid_tolerance = 2.5e-320 underflows a"),
        # booleans were True / False, strings in Python's quotes, a date datetime.date(...)
        ("[kernel]\nspatial_order = true", "kernel.spatial_order = true: expected a whole number"),
        ('[kernel]\nwing = "yes"', 'kernel.wing = "yes": expected true or false'),
        # in Python's own quotes, 'C:\\dir'
        ('[kernel]\nwing = "C:\\\\dir"', 'kernel.wing = "C:\\\\dir": expected true or false'),
        ('[score]\nmethod = "zogyy"', 'score.method = "zogyy": choose one of zogy, al, none'),
        ("[kernel]\nmax_size = 2024-01-01", "kernel.max_size = 2024-01-01: expected a whole"),
        (
            '[kernel]\nspatial_order = {a = 1, "b c" = [true]}',
            'kernel.spatial_order = {a = 1, "b c" = [true]}: expected a whole number',
        ),
        # a list's item was shown as the field's value ("kernel.degrees = 99")
        ("[kernel]\ndegrees = [1, 2, 99]", "kernel.degrees = [1, 2, 99]: item 99 is above its"),
        ("[kernel]\ndegrees = [4, false]", "kernel.degrees = [4, false]: item false: expected"),
        ('method = "al"', 'method = "al" is outside any section; it is a field of [score]'),
        ("kernel = 3", "config section [kernel] must be a table of field = value, not kernel = 3"),
        (
            '[score]\nmethod = "none"\n[detection]\ndetect_on = "score"',
            'detection.detect_on = "score" needs score.method = "zogy" or "al", not "none"; '
            'set detection.detect_on = "difference"',
        ),
    ],
)
def test_a_config_files_values_are_named_as_toml_writes_them(
    tmp_path, written: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(written + "\n")
    with pytest.raises(ConfigError) as info:
        cfg.load_toml(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["kernel.max_kernel_sum_sigma=1e400"],
            "kernel.max_kernel_sum_sigma = 1e400 overflows a float",
        ),
        # a whole number too large for a float was an internal error (OverflowError)
        (
            ["kernel.max_kernel_sum_sigma=1" + "0" * 400],
            "kernel.max_kernel_sum_sigma = 1" + "0" * 400 + " overflows a float (the largest",
        ),
        (["warp.grid_tolerance=1e-400"], "warp.grid_tolerance = 1e-400 underflows a float"),
        # 0 stood for 1e-400 (equal to the 0.0 it was read as), and the run took 0
        (
            ["warp.grid_tolerance=1e-400", "warp.grid_tolerance=0"],
            "warp.grid_tolerance is given twice, as 1e-400 and 0; give it once",
        ),
        (["kernel.spatial_order=true"], "kernel.spatial_order = true: expected a whole number"),
        (["kernel.wing=yes"], 'kernel.wing = "yes": expected true or false'),
        (['kernel.wing="true"'], 'kernel.wing = "true": expected true or false'),
        (
            ["kernel.spatial_order=1", "kernel.spatial_order=true"],
            "kernel.spatial_order is given twice, as 1 and true; give it once",
        ),
        (["candidates.snr_min=600"], "candidates.snr_max = 500.0 must exceed candidates.snr_min"),
        # the command-line argument as a shell takes it, not in Python's quotes
        (["kernel-spatial"], "--set kernel-spatial: expected section.field=value"),
        (["kernel.degrees=[4,2"], "--set 'kernel.degrees=[4,2': the value [4,2 is not valid"),
    ],
)
def test_set_values_are_named_as_toml_writes_them(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.apply_overrides(cfg.SubtractionConfig(), overrides)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    ("written", "value"),
    [("0e-400", 0.0), ("-0.0e-999", 0.0), ("2.2250738585072014e-308", 2.2250738585072014e-308)],
)
def test_a_zero_and_the_smallest_full_float_are_no_underflow(written: str, value: float) -> None:
    c = cfg.apply_overrides(cfg.SubtractionConfig(), [f"warp.grid_tolerance={written}"])
    assert c.warp.grid_tolerance == value


def test_values_are_spelt_as_toml() -> None:
    assert [cfg.toml_text(v) for v in (True, False, "al", 2, 0.5, (4, 2), float("inf"))] == [
        "true",
        "false",
        '"al"',
        "2",
        "0.5",
        "[4, 2]",
        "inf",
    ]
    assert (
        cfg.toml_text({"a b": 'say "x"', "c": [1.0, None]})
        == '{"a b" = "say \\"x\\"", c = [1.0, None]}'
    )
