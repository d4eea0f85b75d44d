"""DVC stage `cache_teacher`: run the frozen teacher over the train split into the teacher cache (params: grid, cache).

The store is `persist: true`, so a killed `dvc repro` finishes the remaining shards on the next run. A store
written under another teacher, split, grid or cache setting is recomputed from scratch (DVC reruns the stage
exactly when one of those changed). Under torchrun, ranks share the shards.
"""

from stereodistill.cache.run import cache_teacher_from_params
from stereodistill.params import load_params
from stereodistill.stage_runner import run_stage


def main() -> None:
    cache_teacher_from_params(load_params(), recompute_on_mismatch=True)


if __name__ == "__main__":
    run_stage(main)
