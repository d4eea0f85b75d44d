"""DVC stage `evaluate_teacher`: score the teacher on the evaluation split (writes evaluate.teacher_metrics)."""

from stereodistill.params import load_params
from stereodistill.stage_runner import run_stage
from stereodistill.teacher.evaluate import evaluate_teacher_from_params


def main() -> None:
    evaluate_teacher_from_params(load_params())


if __name__ == "__main__":
    run_stage(main)
