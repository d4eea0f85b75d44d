"""The one settings loader (stereodistill/settings.py): keys, types, tuples, nested sections, value errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stereodistill.errors import InputError
from stereodistill.settings import OMIT_AT_DEFAULT, SettingsError, fail, load_settings, to_dict


@dataclass(frozen=True)
class Inner:
    size: tuple[float, float] = (1.0, 2.0)
    counts: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.size[0] > self.size[1]:
            fail("size", f"needs min <= max, got {list(self.size)}")


@dataclass(frozen=True)
class Outer:
    name: str = "a"
    rate: float = 0.5
    steps: tuple[int, ...] = (1,)
    inner: Inner = Inner()
    either: tuple[float, ...] | dict[str, tuple[float, ...]] = (0.1,)
    late: int = field(default=0, metadata=OMIT_AT_DEFAULT)


def load(values: dict) -> Outer:
    return load_settings(Outer, values, "top", "p.yaml")


def test_builds_typed_values_and_round_trips():
    o = load({"steps": [2, 3], "inner": {"size": [0, 4.5], "counts": {"Car": 2}}, "either": {"x": [0.5]}})
    assert o.steps == (2, 3) and o.inner == Inner((0, 4.5), {"Car": 2}) and o.either == {"x": (0.5,)}
    assert isinstance(o.inner.size[0], int)  # kept as written: checkpoints store what the file says
    assert to_dict(o) == {
        "name": "a",
        "rate": 0.5,
        "steps": [2, 3],
        "inner": {"size": [0, 4.5], "counts": {"Car": 2}},
        "either": {"x": [0.5]},
    }
    assert load(to_dict(o)) == o
    assert to_dict(load({"late": 1}))["late"] == 1  # written once it leaves its default
    assert load({"inner": None}).inner == Inner()  # a null section: its defaults
    assert load_settings(Outer, None, "top") == Outer()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nmae": "b", "zz": 1}, "p.yaml: unknown field(s) top.nmae, top.zz"),
        ({"inner": {"sise": [1, 2]}}, "unknown field(s) top.inner.sise"),
        ({"rate": "fast"}, "top.rate: expected a number, got 'fast' (str)"),
        ({"rate": "1e-3"}, "write 1.0e-3"),
        ({"rate": True}, "top.rate: expected a number"),
        ({"steps": [1, 2.5]}, "top.steps[1]: expected an integer"),
        ({"steps": 3}, "top.steps: expected a list of integers"),
        ({"inner": {"size": [1.0]}}, "top.inner.size: expected a list of 2 numbers, got 1: [1.0]"),
        ({"inner": {"counts": {"Car": "two"}}}, "top.inner.counts.Car: expected an integer"),
        ({"inner": 5}, "top.inner: expected a mapping"),
        ({"either": [0.1, "x"]}, "top.either[1]: expected a number"),
        ({"either": 0.1}, "top.either: expected a list of numbers or a mapping of name -> a list of numbers"),
        ({"inner": {"size": [3, 1]}}, "p.yaml: top.inner.size: needs min <= max, got [3, 1]"),
    ],
)
def test_errors_name_the_dotted_key_and_the_file(values, message):
    with pytest.raises(InputError) as err:
        load(values)
    assert message in str(err.value)


def test_a_class_built_directly_names_only_its_field():
    with pytest.raises(SettingsError, match=r"^size: needs min <= max"):
        Inner(size=(3.0, 1.0))


def test_params_files_read_booleans_as_yaml_1_2_so_dvc_set_modes_stay_strings(tmp_path):
    """``dvc exp run -S distill.xgd.mode=off`` writes a bare ``off`` (ruamel, YAML 1.2): it must load as "off"."""
    from dvc.utils.serialize._yaml import modify_yaml

    from stereodistill.params import load_params, read_params_yaml

    assert read_params_yaml("a: off\nb: on\nc: yes\nd: true\ne: False\nf: 1.0e-3") == {
        "a": "off",
        "b": "on",
        "c": "yes",
        "d": True,
        "e": False,
        "f": 0.001,
    }
    path = tmp_path / "params.yaml"
    path.write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    with modify_yaml(path) as data:  # what `dvc exp run -S` does to params.yaml
        data["distill"]["xgd"]["mode"] = "off"
        data["distill"]["cld"]["mode"] = "off"
    assert "mode: off" in path.read_text()
    params = load_params(path)
    assert (
        params.distill.xgd.mode == "off" and params.distill.cld.mode == "off" and not params.distill.enabled
    )
