"""Training the student from params.yaml: what the `train_student` stage and `stereodistill train-student` run."""

from __future__ import annotations

from pathlib import Path

from stereodistill.cache.reader import TeacherCache
from stereodistill.cache.store import file_sha256
from stereodistill.checkpoints import default_device
from stereodistill.errors import InputError
from stereodistill.head.anchors import AnchorGrid
from stereodistill.params import Params
from stereodistill.student.pretrain import trunk_path
from stereodistill.student.train import train_student


def check_cache_teacher(cache_path: str | Path, teacher_out_dir: str) -> None:
    """Refuse a cache written by another teacher than ``{teacher.out_dir}/teacher.pt``, when that file exists.

    (A cache used without its teacher at hand is not checked: the student needs only the cache.)
    """
    checkpoint = Path(teacher_out_dir) / "teacher.pt"
    if not checkpoint.is_file():
        return
    cache = TeacherCache(cache_path)
    written_by = str(cache.identity.get("teacher", {}).get("sha256", ""))
    current = file_sha256(checkpoint)
    if written_by != current:
        raise InputError(
            f"teacher: this cache was written by teacher sha256 {written_by[:16]}..., but teacher.out_dir holds "
            f"{checkpoint} (sha256 {current[:16]}...); rerun `stereodistill cache-teacher`",
            cache.path,
        )


def train_student_from_params(
    params: Params, resume: bool = False, restart_on_mismatch: bool = False, progress: bool = True
) -> Path:
    """Train the student on ``{data.prepared_dir}/train.h5`` into ``student.out_dir`` (see ``train_student``).

    The teacher cache ``cache.store`` is opened only when ``distill`` turns XGD, CLD or the imitation on. The
    network starts from the pretrained trunk (:func:`~stereodistill.student.pretrain.trunk_path`) unless
    ``student.pretrain.epochs`` is 0.
    """
    student = params.student
    cache_path = None
    if params.distill.enabled:
        cache_path = params.cache.store
        check_cache_teacher(cache_path, params.teacher.out_dir)
    return train_student(
        AnchorGrid.from_params(params.grid, params.source),
        student.model,
        student.train,
        params.distill,
        params.data.prepared_split("train"),
        student.out_dir,
        cache_path=cache_path,
        resume=resume,
        restart_on_mismatch=restart_on_mismatch,
        device=default_device(),
        progress=progress,
        trunk=trunk_path(params) if student.pretrain.epochs > 0 else None,
        pretrain=student.pretrain,
    )
