"""The official KITTI object-detection evaluation protocol (2D, BEV, 3D and AOS; R11 and R40)."""

from stereodistill.evaluation.kitti import evaluate_folders, evaluate_kitti, read_result_file
from stereodistill.evaluation.protocol import DEFAULT_CLASSES, DIFFICULTIES, EVALUABLE_CLASSES, MIN_OVERLAPS
from stereodistill.evaluation.report import format_table, write_json_atomic

__all__ = [
    "DEFAULT_CLASSES",
    "DIFFICULTIES",
    "EVALUABLE_CLASSES",
    "MIN_OVERLAPS",
    "evaluate_folders",
    "evaluate_kitti",
    "format_table",
    "read_result_file",
    "write_json_atomic",
]
