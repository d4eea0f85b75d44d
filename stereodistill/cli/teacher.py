"""``stereodistill train-teacher`` and the ``stereodistill teacher`` group."""

from __future__ import annotations

from pathlib import Path

import click

from stereodistill.cli.options import params_option, progress_option, resume_option


@click.command("train-teacher")
@params_option("data, grid, teacher")
@resume_option("teacher")
@progress_option
def train_teacher(params_path: Path, resume: bool, progress: bool) -> None:
    """Train the LiDAR teacher on the prepared train split (what the `train_teacher` stage runs)."""
    from stereodistill.params import load_params
    from stereodistill.teacher.run import train_teacher_from_params

    path = train_teacher_from_params(load_params(params_path), resume=resume, progress=progress)
    click.echo(f"wrote {path}")


@click.group("teacher")
def teacher() -> None:
    """Evaluate, inspect or import LiDAR teachers."""


@teacher.command("evaluate")
@params_option("data, grid, teacher, evaluate")
@progress_option
def evaluate_teacher(params_path: Path, progress: bool) -> None:
    """Detect on the evaluation split and score with the KITTI protocol (the `evaluate_teacher` stage)."""
    from stereodistill.params import load_params
    from stereodistill.teacher.evaluate import evaluate_teacher_from_params

    evaluate_teacher_from_params(load_params(params_path), progress=progress)


@teacher.command("import-openpcdet", short_help="Convert an OpenPCDet SECOND checkpoint into a teacher.")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the StereoDistill teacher checkpoint (e.g. models/teacher/teacher.pt).",
)
@click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Take the grid and teacher.model sections from this params file "
    "[default: OpenPCDet second.yaml's range, anchors and network].",
)
@click.option(
    "--sparse-layout",
    type=click.Choice(["auto", "spconv1", "spconv2", "native"]),
    default="auto",
    show_default=True,
    help="Sparse-conv weight layout in the file: spconv1 [k,k,k,Cin,Cout], spconv2 [Cout,k,k,k,Cin], "
    "native [k,k,k,Cout,Cin]; auto detects it from the shapes.",
)
def import_openpcdet(checkpoint: Path, out: Path, params_path: Path | None, sparse_layout: str) -> None:
    """Convert an OpenPCDet SECOND checkpoint (tools/cfgs/kitti_models/second.yaml) into a teacher.

    CHECKPOINT is OpenPCDet's .pth ({epoch, it, model_state, optimizer_state, version}); it is read with
    torch.load(weights_only=True), never unpickling code. The result loads wherever a trained teacher does,
    provided the grid matches (use --params for a grid/teacher section that describes the imported network;
    second.yaml needs grid.anchor_placement: range_corners, 0.05 m voxels, sparse_extra_z_voxels: 1 and
    last_down_z_padding: 0).

    Frame caveat: OpenPCDet trains SECOND in the Velodyne frame; our teacher is fed project-frame points
    (origin at camera 0). On KITTI the LiDAR sits about 0.27 m behind and 0.08 m above camera 0, so the imported
    teacher sees every point shifted by roughly (-0.27, 0, +0.08) m from what it was trained on: a small loss of
    accuracy, mostly in height. Retrain or fine-tune in the project frame for an exact teacher.
    """
    from stereodistill.teacher.import_openpcdet import import_openpcdet as run_import

    imported = run_import(checkpoint, out, params_path, sparse_layout)
    model, source = imported.model, imported.provenance
    tensors = len(model.state_dict())
    click.echo(f"wrote {out}")
    click.echo(
        f"from {checkpoint} (sha256 {source['sha256'][:16]}..., OpenPCDet version {source['openpcdet_version']}, "
        f"epoch {source['openpcdet_epoch']})"
    )
    click.echo(f"sparse-conv weights: {imported.sparse_layout.name} layout {imported.sparse_layout.axes}")
    click.echo(f"tensors: {tensors} converted; dropped: {', '.join(imported.ignored_keys) or 'none'}")
    grid = model.grid
    click.echo(
        f"grid: {grid.nx} x {grid.ny} cells of {grid.bev_cell_size} m, classes {', '.join(grid.class_names)}, "
        f"anchors at {grid.anchor_placement}"
    )
    for note in imported.anchor_warnings:
        click.echo(f"warning: {note}", err=True)
    click.echo(
        "note: trained in the Velodyne frame; fed project-frame points (KITTI: ~0.27 m x, ~0.08 m z offset)",
        err=True,
    )
