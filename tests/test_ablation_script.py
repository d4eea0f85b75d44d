"""benchmarks/ablation.py's own rules: params overrides and the mean / std / 95 % interval it reports."""

from __future__ import annotations

import json
import math

import pytest
from benchmark_scripts import benchmark_script


@pytest.fixture(scope="module")
def ablation():
    with benchmark_script("ablation") as module:
        yield module


def test_the_machine_names_the_cpu_torch_and_the_threads(ablation):
    import torch

    where = ablation.machine(threads=1)
    assert f"torch {torch.__version__}, 1 thread" in where and "cores" in where
    assert ablation.machine(threads=2).endswith("2 threads")


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
    half = 4.3027 / math.sqrt(3)  # Student's t, 2 degrees of freedom
    assert summary["ci95"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-4)
    five = ablation.mean_std([-2.91, -2.87, -0.09, -5.71, -0.64])
    assert five["ci95"][0] < 0 < five["ci95"][1]  # the weight-average difference of docs/RESULTS.md
    assert 0.05 < five["p"] < 1.0  # an interval that holds zero has p above 0.05
    one = ablation.mean_std([4.0])
    assert one["mean"] == 4.0 and one["std"] is None and one["ci95"] is None and one["p"] is None


@pytest.mark.parametrize(
    ("df", "critical"),
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (11, 2.2010), (38, 2.0244), (1000, 1.9623)],
)
def test_t_critical_values_match_the_tables(ablation, df, critical):
    assert ablation.t_critical_975(df) == pytest.approx(critical, abs=1e-4)


def test_t_p_values_match_the_tables_and_the_interval(ablation):
    assert ablation.t_two_sided_p(2.0, 10) == pytest.approx(0.07339, abs=1e-5)
    assert ablation.t_two_sided_p(-3.0, 4) == pytest.approx(0.03994, abs=1e-5)
    assert ablation.t_two_sided_p(0.0, 5) == 1.0
    # A 95 % interval that just touches zero has p = 0.05.
    values = [0.5, 1.0, 2.5, 3.0, 4.0]
    summary = ablation.mean_std(values)
    shifted = ablation.mean_std([v - summary["ci95"][0] for v in values])
    assert shifted["ci95"][0] == pytest.approx(0.0, abs=1e-9)
    assert shifted["p"] == pytest.approx(0.05, abs=1e-9)


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


def _metrics(car_moderate: float) -> dict:
    table = {m: {d: car_moderate for d in ("easy", "moderate", "hard")} for m in ("3d", "bev")}
    return {"results": {cls: {"strict": {"R40": table}} for cls in ("Car", "Pedestrian", "Cyclist")}}


INPUTS = {"code": "c0de", "data": "da7a", "trunk": "7runk", "cache": {"teacher": {"sha256": "7eac"}}}


def _record(car_moderate: float, kept: dict, machine: str, **changes) -> dict:
    table = {m: {d: car_moderate for d in ("easy", "moderate", "hard")} for m in ("3d", "bev")}
    record = {
        "params": {"seed": 0},
        "seconds": 60.0,
        "machine": machine,
        "inputs": dict(INPUTS),
        "ap_r40_strict": {cls: table for cls in ("Car", "Pedestrian", "Cyclist")},
        "car_3d_moderate_last_weights": None,
        "xgd_kept_share": kept,
    }
    record.update(changes)
    return record


def _write_runs(out, car: dict[str, list[float]], **changes) -> None:
    for variant, values in car.items():
        for seed, value in enumerate(values):
            run_dir = out / variant / f"seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            kept = {"centre": 0.5} if "xgd" in variant else {}
            where = "a CPU" if seed else "another CPU"
            (run_dir / "run.json").write_text(json.dumps(_record(value, kept, where, **changes)))


def test_a_run_is_finished_only_with_its_scores_under_the_same_params(ablation, tmp_path):
    assert ablation.finished_record(tmp_path) is None  # no record
    (tmp_path / "run.json").write_text(json.dumps({"params": {"seed": 0}, "seconds": 1.0}))
    assert ablation.finished_record(tmp_path) is None  # a record without scores
    (tmp_path / "run.json").write_text(json.dumps(_record(10.0, {}, "a CPU")))
    assert ablation.finished_record(tmp_path)["seconds"] == 60.0
    assert ablation.finished_record(tmp_path, {"seed": 0}) is not None
    assert ablation.finished_record(tmp_path, {"seed": 1}) is None  # other params: run it again


def test_summary_refuses_runs_trained_on_different_inputs(ablation, tmp_path):
    car = {"gt_only": [10.0, 12.0], "xgd": [11.0, 13.0]}
    _write_runs(tmp_path / "out", car)
    (tmp_path / "teacher.json").write_text(json.dumps(_metrics(80.0)))
    seed1 = tmp_path / "out" / "xgd" / "seed1" / "run.json"
    other = json.loads(seed1.read_text())
    other["inputs"]["trunk"] = "an0ther"
    seed1.write_text(json.dumps(other))
    with pytest.raises(
        SystemExit, match=r"did not all train on one trunk: 3 runs \(gt_only/seed0, ...\); 1 runs"
    ):
        ablation.summarise(tmp_path / "out", [0, 1], tmp_path / "teacher.json", ["gt_only", "xgd"])
    seed1.unlink()
    with pytest.raises(
        SystemExit, match="seed1/run.json: missing or incomplete — the run xgd/seed1 did not finish"
    ):
        ablation.summarise(tmp_path / "out", [0, 1], tmp_path / "teacher.json", ["gt_only", "xgd"])


def test_summary_pairs_gains_by_seed_and_draws_them(ablation, tmp_path):
    # Car 3D moderate per variant and seed: xgd beats whole_box by exactly 1 on every seed.
    car = {
        "gt_only": [10.0, 12.0, 14.0],
        "whole_box": [11.0, 12.5, 16.0],
        "xgd": [12.0, 13.5, 17.0],
        "cld": [10.0, 13.0, 14.0],
        "xgd_cld": [13.0, 12.0, 18.0],
    }
    _write_runs(tmp_path / "out", car)
    (tmp_path / "out" / "gt_only" / "seed1" / "run.json").write_text(
        json.dumps(_record(12.0, {}, "a CPU", inputs={**INPUTS, "cache": None}))
    )  # a run without distillation reads no cache
    (tmp_path / "teacher.json").write_text(json.dumps(_metrics(80.0)))
    summary = ablation.summarise(tmp_path / "out", [0, 1, 2], tmp_path / "teacher.json")
    gain = summary["variants"]["xgd_cld"]["car_3d_moderate_gain_over_gt_only"]
    assert gain["values"] == [3.0, 0.0, 4.0] and gain["mean"] == pytest.approx(7 / 3)
    assert set(summary["contrasts"]) == {
        "car_3d_moderate_gain_xgd_over_whole_box",
        "car_3d_moderate_gain_xgd_cld_over_xgd",
        "car_3d_moderate_gain_xgd_cld_over_cld",
    }  # the imitation contrasts need the imitation variants
    exact = summary["contrasts"]["car_3d_moderate_gain_xgd_over_whole_box"]
    assert exact["values"] == [1.0, 1.0, 1.0] and exact["std"] == 0.0 and exact["p"] == 0.0
    assert summary["variants"]["xgd"]["xgd_kept_share"]["centre"]["mean"] == 0.5
    assert summary["machines"] == {"another CPU": 5, "a CPU": 10}
    assert summary["inputs"] == INPUTS
    assert summary["run_hours"] == pytest.approx(15 / 60)
    table = ablation.markdown(summary)
    assert "- a CPU: 10 runs" in table
    assert "| xgd − whole_box | 1.00 ± 0.00 | [+1.00, +1.00] | 0.000 |" in table
    figure = tmp_path / "fig" / "gains.png"
    ablation.write_figure(summary, figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [label for label, _ in ablation.paired_gains(summary)] == [
        "whole_box − gt_only",
        "xgd − gt_only",
        "cld − gt_only",
        "xgd_cld − gt_only",
        "xgd − whole_box",
        "xgd_cld − xgd",
        "xgd_cld − cld",
    ]
