"""DVC stage `train_student`: train the stereo student (params: grid, student.model, student.train, distill,
cache.store when distilling).

`{student.out_dir}/checkpoint.pt` is not a DVC output, so DVC leaves it in place and a killed `dvc repro`
resumes from it; a checkpoint written under other settings, code, data or cache is not resumed but started over.
"""

from stereodistill.params import load_params
from stereodistill.stage_runner import run_stage
from stereodistill.student.run import train_student_from_params


def main() -> None:
    train_student_from_params(load_params(), resume=True, restart_on_mismatch=True)


if __name__ == "__main__":
    run_stage(main)
