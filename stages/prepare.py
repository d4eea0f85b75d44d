"""DVC stage `prepare`: validate each split and pack it into `{data.prepared_dir}/{split}.h5`."""

from pathlib import Path

from stereodistill.data.prepared import prepare_split
from stereodistill.params import load_params
from stereodistill.stage_runner import run_stage


def main() -> None:
    data = load_params().data
    split_dir = Path(data.split_dir)
    Path(data.prepared_dir).mkdir(parents=True, exist_ok=True)
    for split in data.splits:
        prepare_split(Path(data.root), split_dir / f"{split}.txt", data.prepared_split(split))


if __name__ == "__main__":
    run_stage(main)
