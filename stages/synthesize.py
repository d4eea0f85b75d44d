"""DVC stage `synthesize`: write the synthetic KITTI-layout benchmark (params: data.synth)."""

from stereodistill.data.synth import generate_dataset
from stereodistill.params import load_params
from stereodistill.stage_runner import run_stage


def main() -> None:
    synth = load_params().data.synth
    generate_dataset(
        out_dir=synth.out,
        frames=synth.frames,
        seed=synth.seed,
        preset=synth.preset,
        val_fraction=float(synth.val_fraction),
        extra_val_frames=synth.extra_val_frames,
        lidar=synth.lidar,
        overwrite=True,
    )


if __name__ == "__main__":
    run_stage(main)
