"""DVC stage `prepare`: validate each split and pack it into `{data.prepared_dir}/{split}.h5`."""

from pathlib import Path

from stereodistill.data.prepared import prepare_split
from stereodistill.params import load_params, require, section
from stereodistill.stage_runner import run_stage


def main() -> None:
    data = section(load_params(), "data")
    root = Path(require(data, "root", "data"))
    split_dir = Path(require(data, "split_dir", "data"))
    out_dir = Path(require(data, "prepared_dir", "data"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in require(data, "splits", "data"):
        prepare_split(root, split_dir / f"{split}.txt", out_dir / f"{split}.h5")


if __name__ == "__main__":
    run_stage(main)
