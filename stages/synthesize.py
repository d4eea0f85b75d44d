"""DVC stage `synthesize`: write the synthetic KITTI-layout benchmark (params: data.synth)."""

from stereodistill.data.synth import generate_dataset
from stereodistill.params import load_params, require, section
from stereodistill.stage_runner import run_stage


def main() -> None:
    data = section(load_params(), "data")
    synth = require(data, "synth", "data")
    generate_dataset(
        out_dir=require(synth, "out", "data.synth"),
        frames=int(require(synth, "frames", "data.synth")),
        seed=int(require(synth, "seed", "data.synth")),
        preset=str(require(synth, "preset", "data.synth")),
        val_fraction=float(require(synth, "val_fraction", "data.synth")),
        overwrite=True,
    )


if __name__ == "__main__":
    run_stage(main)
