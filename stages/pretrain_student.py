"""DVC stage `pretrain_student`: pretrain the student's stereo trunk on depth (params: grid, student.model,
student.pretrain, student.train.image_scale / flip_probability / num_workers / frame_limit).

`{student.pretrain.out_dir}/checkpoint.pt` is not a DVC output, so a killed `dvc repro` resumes from it; a
checkpoint written under other settings, code or data is not resumed but started over.
"""

from stereodistill.params import load_params
from stereodistill.stage_runner import run_stage
from stereodistill.student.pretrain import pretrain_trunk_from_params


def main() -> None:
    pretrain_trunk_from_params(load_params(), resume=True, restart_on_mismatch=True)


if __name__ == "__main__":
    run_stage(main)
