"""flatmin's command line: ``python train.py [group=option ...] [key=value ...]`` (Hydra)."""

import hydra
from omegaconf import DictConfig

import flatmin.train
from flatmin.runtime.distributed import share_run_dir_under_torchrun


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return flatmin.train.main(cfg)


if __name__ == "__main__":
    share_run_dir_under_torchrun()   # torchrun: one run directory for all ranks, written by rank 0
    main()
