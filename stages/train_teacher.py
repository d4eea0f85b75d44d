"""DVC stage `train_teacher`: train the LiDAR teacher (params: grid, teacher.model, teacher.train).

`{teacher.out_dir}/checkpoint.pt` is not a DVC output, so DVC leaves it in place and a killed `dvc repro`
resumes from it; a checkpoint written under other settings, code or data is not resumed but started over.
"""

from stereodistill.params import load_params
from stereodistill.stage_runner import run_stage
from stereodistill.teacher.run import train_teacher_from_params


def main() -> None:
    train_teacher_from_params(load_params(), resume=True, restart_on_mismatch=True)


if __name__ == "__main__":
    run_stage(main)
