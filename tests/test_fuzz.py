"""Property tests (hypothesis) of what users type: ``--as`` attributes, ``--set`` overrides and the label CSVs
whose schema is inferred. Each input either works or fails with the module's own one-line error, never
with anything else. Example counts are kept small: the whole file runs in seconds."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conceal.cli import _parse_attributes  # noqa: E402
from conceal.config import ConfigError, RunConfig, build_run_config, parse_override  # noqa: E402
from conceal.data import DataError, LabelError  # noqa: E402
from conceal.data.folder import FolderCSV, _inferred_value, infer_label  # noqa: E402

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- --as ------------------------------------------------------------------------------------------------

names = st.text(st.characters(blacklist_characters=",=", blacklist_categories=("Cs",)), min_size=1, max_size=8).map(str.strip).filter(bool)
values = st.text(st.characters(blacklist_characters=",", blacklist_categories=("Cs",)), max_size=8).map(str.strip)


@FAST
@given(st.dictionaries(names, values, min_size=1, max_size=5))
def test_as_round_trips(attributes):
    text = ",".join(f"{k}={v}" for k, v in attributes.items())
    assert _parse_attributes(text) == attributes


@FAST
@given(st.lists(st.tuples(names, values), min_size=1, max_size=5), st.data())
def test_as_refuses_a_repeated_name(pairs, data):
    name, value = data.draw(st.sampled_from(pairs))
    pairs = pairs + [(f" {name} ", data.draw(values))]  # the same name again (spaces do not make it another)
    with pytest.raises(LabelError, match="twice"):
        _parse_attributes(",".join(f"{k}={v}" for k, v in pairs))


@FAST
@given(st.text(max_size=40))
def test_as_never_fails_otherwise(text):
    try:
        _parse_attributes(text)
    except LabelError as e:
        assert "\n" not in str(e)


# --- --set -----------------------------------------------------------------------------------------------


def config_keys(method: str) -> list[str]:
    from conceal.config import DataConfig, TrainConfig
    from conceal.methods import method_class

    keys = [f"data.{f.name}" for f in dataclasses.fields(DataConfig)] + [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)]
    return keys + [f"model.{f.name}" for f in dataclasses.fields(method_class(method).Config)]


toml_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr).map(
        lambda r: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(r, r)),
    st.booleans().map(lambda b: str(b).lower()), st.text(max_size=10), st.just("[1, 2]"), st.just('"aia"'), st.just("{a = 1}"),
)


@FAST
@given(st.sampled_from(["concealer", "anonymizer", "masker"]), st.data())
def test_set_overrides_give_a_checked_config_or_one_line(method, data):
    from conceal.methods import method_class

    keys = st.one_of(st.sampled_from(config_keys(method)), st.text(max_size=12))
    overrides = data.draw(st.lists(st.builds(lambda k, v: f"{k}={v}", keys, toml_values), max_size=4))
    try:
        cfg = build_run_config(method, None, overrides, method_class(method).Config)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(cfg, RunConfig)
    for section in (cfg.data, cfg.train, cfg.model):  # what passed is in range: finite floats, counts >= 1
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float):
                assert math.isfinite(value), f.name
            if "at_least" in f.metadata and isinstance(value, (int, float)):
                assert value >= f.metadata["at_least"], f.name


@FAST
@given(st.integers(1, 10**6), st.integers(-(10**6), 0))
def test_set_sets_what_it_says_and_refuses_what_is_out_of_range(good, bad):
    from conceal.methods.concealer import ConcealerConfig

    cfg = build_run_config("concealer", None, [f"train.epochs={good}", f"model.latent={good}"], ConcealerConfig)
    assert cfg.train.epochs == good and cfg.model.latent == good
    with pytest.raises(ConfigError, match="at least 1"):
        build_run_config("concealer", None, [f"train.epochs={bad}"], ConcealerConfig)
    assert parse_override(f"a.b={good}") == (["a", "b"], good)


# --- label CSVs ------------------------------------------------------------------------------------------

cells = st.one_of(st.sampled_from(["0", "1", "-1", "2", "0.5", "1e3", "nan", "inf", "male", "female", "Male", ""]),
                  st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6).map(str.strip))


@FAST
@given(st.lists(cells.filter(bool), min_size=1, max_size=30))
def test_inferred_schema_fits_every_cell_it_was_inferred_from(column):
    try:
        label = infer_label("x", column)
    except LabelError:
        return
    stored = [_inferred_value(label, cell) for cell in column]
    assert all(math.isfinite(v) for v in stored)
    if label.kind == "binary":
        assert set(stored) <= {0.0, 1.0}
    elif label.kind == "continuous":
        lo, hi = label.range
        assert all(lo <= v <= hi for v in stored) and not set(stored) <= {0.0, 1.0}
    else:
        assert sorted(set(column)) == list(label.classes) and set(stored) == set(map(float, range(label.n_classes)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["a.jpg", "./a.jpg", "b/../a.jpg", "sub//c.png", "", "/etc/x.jpg", "d.txt", "a.jpg"]),
                          cells, cells), min_size=1, max_size=8),
       st.sampled_from(["path,label,other", "path,identity,split", "path,path", "file,label", ""]))
def test_any_label_csv_gives_a_dataset_or_one_line(rows, header):
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "sub").mkdir()
        for name in ("a.jpg", "sub/c.png"):
            Image.new("RGB", (8, 8)).save(root / name)
        lines = [header] + [",".join(f'"{c}"' for c in row) for row in rows]
        (root / "labels.csv").write_text("\n".join(lines) + "\n")
        try:
            ds = FolderCSV(root)
        except DataError as e:
            assert "\n" not in str(e)
            return
        assert len({r.path.resolve() for r in ds.records}) == len(ds.records)  # one record per image file
        assert all(r.path.resolve().is_relative_to(root.resolve()) for r in ds.records)
        assert len(ds.records) + len(ds.skipped) <= len(rows)
