"""benchmarks/ablation.py's own rules: params overrides and the mean / std / 95 % interval it reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

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


def test_without_dvc_on_path_it_says_to_activate_the_environment(ablation, tmp_path, monkeypatch):
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    monkeypatch.setenv("PATH", str(tmp_path))  # no dvc here
    monkeypatch.setattr("sys.argv", ["ablation.py", "--params", str(params), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="dvc is not on PATH: activate the environment"):
        ablation.main()
    assert not (tmp_path / "out").exists()


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


INPUTS = {"code": "c0de", "data": "da7a", "trunk": "7runk", "cache": {"teacher": {"sha256": "7eac"}}}


def _table(value: float) -> dict:
    per_metric = {m: {d: value for d in ("easy", "moderate", "hard")} for m in ("3d", "bev")}
    return {cls: per_metric for cls in ("Car", "Pedestrian", "Cyclist")}


def _record(car_moderate: float, kept: dict, machine: str, **changes) -> dict:
    record = {
        "params": {"seed": 0},
        "seconds": 60.0,
        "machine": machine,
        "inputs": dict(INPUTS),
        "ap_r40_strict": _table(car_moderate),
        "teacher_ap_r40_strict": _table(80.0),
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


def _set_inputs(run_json, **inputs) -> None:
    record = json.loads(run_json.read_text())
    record["inputs"].update(inputs)
    run_json.write_text(json.dumps(record))


def test_a_run_is_finished_only_with_its_scores_under_the_same_params(ablation, tmp_path):
    assert ablation.finished_record(tmp_path) is None  # no record
    (tmp_path / "run.json").write_text(json.dumps({"params": {"seed": 0}, "seconds": 1.0}))
    assert ablation.finished_record(tmp_path) is None  # a record without scores
    (tmp_path / "run.json").write_text(json.dumps(_record(10.0, {}, "a CPU")))
    assert ablation.finished_record(tmp_path)["seconds"] == 60.0
    assert ablation.finished_record(tmp_path, {"seed": 0}) is not None
    assert ablation.finished_record(tmp_path, {"seed": 1}) is None  # other params: run it again


def test_a_seed_is_done_on_any_one_stage_one_and_redone_where_its_runs_differ(ablation, tmp_path):
    out = tmp_path / "out"
    _write_runs(out, {"gt_only": [10.0, 12.0, 14.0], "xgd": [11.0, 13.0, 15.0]})
    (out / "xgd" / "seed2" / "run.json").unlink()
    runs = [
        ablation.Run(v, seed, {"seed": 0}, out / v / f"seed{seed}", 1)
        for seed in (0, 1, 2, 3)
        for v in ("gt_only", "xgd")
    ]
    here = {**INPUTS, "trunk": "h3re", "cache": {"teacher": {"sha256": "h3re"}}}
    todo = lambda current: [(r.variant, r.seed) for r in ablation.runs_to_do(runs, current)]  # noqa: E731
    # Seeds 0 and 1 ran on another machine's stage one, whole: done. Seed 2 lacks xgd, and its gt_only record
    # is on that other stage one: both run here. Seed 3 has no records.
    assert todo(here) == [("gt_only", 2), ("xgd", 2), ("gt_only", 3), ("xgd", 3)]
    # On the machine of the records, seed 2's gt_only stands.
    assert todo(INPUTS) == [("xgd", 2), ("gt_only", 3), ("xgd", 3)]
    # A seed whose runs differ is redone where they are not on this stage one (a run without a cache agrees on it).
    _set_inputs(out / "xgd" / "seed1" / "run.json", trunk="h3re", cache=here["cache"])
    _set_inputs(out / "gt_only" / "seed1" / "run.json", cache=None)
    assert ("gt_only", 1) in todo(here) and ("xgd", 1) not in todo(here)
    # Other code: every seed runs again.
    assert len(todo({**INPUTS, "code": "n3w"})) == len(runs)


def test_summary_refuses_mixed_seeds_and_code_and_lists_the_stage_ones(ablation, tmp_path):
    out = tmp_path / "out"
    _write_runs(out, {"gt_only": [10.0, 12.0, 14.0], "xgd": [11.0, 13.0, 15.0]})
    for variant in ("gt_only", "xgd"):  # seed 2 ran on another stage one, whole
        _set_inputs(out / variant / "seed2" / "run.json", trunk="0ther")
        record = json.loads((out / variant / "seed2" / "run.json").read_text())
        record["teacher_ap_r40_strict"] = _table(83.0)
        (out / variant / "seed2" / "run.json").write_text(json.dumps(record))
    summary = ablation.summarise(out, [0, 1, 2], ["gt_only", "xgd"])
    assert [g["seeds"] for g in summary["stage_ones"]] == [[0, 1], [2]]
    assert summary["stage_ones"][1]["inputs"] == {"data": "da7a", "trunk": "0ther", "cache": INPUTS["cache"]}
    assert summary["teacher_ap_r40_strict"]["Car"]["3d"]["moderate"] == pytest.approx(81.0)
    table = ablation.markdown(summary)
    assert "| teacher (LiDAR, mean of the stage ones) | 81.00 |" in table
    assert "- trunk 0ther, teacher 7eac, teacher Car 3D moderate 83.00: seeds 2" in table
    _set_inputs(out / "xgd" / "seed1" / "run.json", trunk="0ther")
    with pytest.raises(SystemExit, match="the runs of seed 1 did not all train on one stage one"):
        ablation.summarise(out, [0, 1, 2], ["gt_only", "xgd"])
    _set_inputs(out / "xgd" / "seed1" / "run.json", trunk="7runk")
    _set_inputs(out / "gt_only" / "seed0" / "run.json", code="n3w")
    with pytest.raises(SystemExit, match="seed 0 did not all train"):
        ablation.summarise(out, [0, 1, 2], ["gt_only", "xgd"])
    for variant in ("gt_only", "xgd"):
        _set_inputs(out / variant / "seed0" / "run.json", code="n3w")
    with pytest.raises(SystemExit, match="2 versions of the student's code"):
        ablation.summarise(out, [0, 1, 2], ["gt_only", "xgd"])
    (out / "xgd" / "seed1" / "run.json").unlink()
    with pytest.raises(
        SystemExit, match="seed1/run.json: missing or incomplete — the run xgd/seed1 did not finish"
    ):
        ablation.summarise(out, [0, 1, 2], ["gt_only", "xgd"])


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
    resumed = tmp_path / "out" / "xgd" / "seed2" / "run.json"
    # A run resumed after a stop records only its last sitting.
    resumed.write_text(json.dumps({**json.loads(resumed.read_text()), "seconds": 6.0}))
    summary = ablation.summarise(tmp_path / "out", [0, 1, 2])
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
    assert summary["stage_ones"] == [
        {
            "inputs": {k: v for k, v in INPUTS.items() if k != "code"},
            "seeds": [0, 1, 2],
            "teacher_ap_r40_strict": _table(80.0),
        }
    ]
    assert summary["teacher_ap_r40_strict"] == _table(80.0)
    assert summary["run_hours"] == pytest.approx((14 * 60 + 6) / 3600)
    table = ablation.markdown(summary)
    xgd_row = next(line for line in table.splitlines() if line.startswith("| xgd | 12.00, 13.50, 17.00 |"))
    assert xgd_row.endswith("| 1.0 |")  # the median run, not pulled down by the resumed one
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


def test_with_imitation_the_summary_gives_each_gain_over_imitation_and_its_contrasts(ablation, tmp_path):
    car = {
        "gt_only": [10.0, 12.0, 14.0],
        "xgd_cld": [13.0, 12.0, 18.0],
        "imitation": [11.0, 12.0, 15.0],
        "imitation_xgd_cld": [14.0, 14.0, 17.0],
    }
    _write_runs(tmp_path / "out", car)
    summary = ablation.summarise(tmp_path / "out", [0, 1, 2], list(car))
    over = summary["variants"]["imitation_xgd_cld"]["car_3d_moderate_gain_over_imitation"]
    assert over["values"] == [3.0, 2.0, 2.0]
    assert set(summary["contrasts"]) == {
        "car_3d_moderate_gain_imitation_xgd_cld_over_imitation",
        "car_3d_moderate_gain_imitation_xgd_cld_over_xgd_cld",
    }  # xgd, cld and whole_box did not run
    table = ablation.markdown(summary).split("**Gain over imitation**")[1].split("**Paired contrasts**")[0]
    assert "| gt_only | -0.67 ± 0.58 | [-2.10, +0.77] | 0.184 |" in table
    assert "| imitation_xgd_cld | 2.33 ± 0.58 | [+0.90, +3.77] |" in table
    assert "| imitation |" not in table  # no gain of a variant over itself


def test_the_committed_summary_is_what_the_committed_records_give(ablation):
    """docs/ablation.json (the numbers docs/RESULTS.md quotes) is summarise() of the records in ablation/."""
    root = Path(__file__).resolve().parents[1]
    committed = json.loads((root / "docs" / "ablation.json").read_text())
    summary = ablation.summarise(root / "ablation", committed["seeds"], list(committed["variants"]))
    assert json.loads(json.dumps(summary)) == {
        key: value for key, value in committed.items() if key not in ("epochs", "wall_minutes", "command")
    }
    assert len(committed["seeds"]) == 32 and len(committed["variants"]) == 7
