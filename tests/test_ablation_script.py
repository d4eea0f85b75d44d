"""benchmarks/ablation.py's own rules: params overrides and the mean / std / 95 % interval it reports."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_overrides_set_nested_keys_as_yaml_and_leave_the_base_alone(ablation):
    base = {"student": {"train": {"ema_decay": 0.0, "epochs": 24}}, "data": {"synth": {"lidar": "hdl32"}}}
    changed = ablation.apply_overrides(
        base, ["student.train.ema_decay=0.99", "data.synth.lidar=ideal", "student.train.epochs=12"]
    )
    assert changed["student"]["train"] == {"ema_decay": 0.99, "epochs": 12}
    assert changed["data"]["synth"]["lidar"] == "ideal"
    assert base["student"]["train"]["ema_decay"] == 0.0  # a copy: the base is untouched


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("student.train.emadecay=1", "no key 'student.train.emadecay'"),
        ("student.train", "expected KEY=VALUE"),
    ],
)
def test_overrides_refuse_unknown_keys_and_bad_items(ablation, item, message):
    with pytest.raises(SystemExit, match=message):
        ablation.apply_overrides({"student": {"train": {"ema_decay": 0.0}}}, [item])


def test_mean_std_and_the_t_interval(ablation):
    summary = ablation.mean_std([1.0, 2.0, 3.0])
    assert summary["mean"] == 2.0 and summary["std"] == 1.0
    half = 4.303 / math.sqrt(3)  # Student's t, 2 degrees of freedom
    assert summary["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    five = ablation.mean_std([-2.91, -2.87, -0.09, -5.71, -0.64])
    assert five["ci95"][0] < 0 < five["ci95"][1]  # the weight-average difference of docs/RESULTS.md
    one = ablation.mean_std([4.0])
    assert one["mean"] == 4.0 and one["std"] is None and one["ci95"] is None  # no spread from one seed


def test_variants_set_all_three_distill_modes(ablation, tmp_path):
    base = {
        "distill": {"xgd": {"mode": "xgd"}, "cld": {"mode": "diagonal"}, "imitation": {"mode": "bev"}},
        "student": {"train": {}},
        "evaluate": {},
    }
    modes = {
        variant: {
            loss: ablation.run_params(base, variant, 0, 12, tmp_path)["distill"][loss]["mode"]
            for loss in ("xgd", "cld", "imitation")
        }
        for variant in ablation.VARIANTS
    }
    assert modes["gt_only"] == {"xgd": "off", "cld": "off", "imitation": "off"}
    assert modes["xgd_cld"] == {"xgd": "xgd", "cld": "diagonal", "imitation": "off"}
    assert modes["imitation"] == {"xgd": "off", "cld": "off", "imitation": "bev"}
    assert modes["imitation_xgd_cld"] == {"xgd": "xgd", "cld": "diagonal", "imitation": "bev"}
    assert all(modes[v]["imitation"] == "off" for v in ablation.DEFAULT_VARIANTS)
    assert base["distill"]["imitation"]["mode"] == "bev"  # a copy: the base is untouched
