"""DVC stage `evaluate_student`: score the student on the evaluation split (writes evaluate.student_metrics)."""

from stereodistill.params import load_params
from stereodistill.stage_runner import run_stage
from stereodistill.student.evaluate import evaluate_student_from_params


def main() -> None:
    evaluate_student_from_params(load_params())


if __name__ == "__main__":
    run_stage(main)
