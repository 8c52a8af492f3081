"""One IGSearchTrainer step in each of several processes (run by test_ddp_one_step under accelerate).

usage: accelerate launch --config_file configs/accelerate/cpu-2proc.yaml tests/integration/ddp_step.py ROOT OUT
ROOT holds the fixture built by test_trainer.py's `setup` (corpus, index, train.jsonl, policy).
"""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

from test_trainer import make_cfg, scripted  # noqa: E402

from igsearch.train.rl import run_training  # noqa: E402

if __name__ == "__main__":
    root, out = Path(sys.argv[1]), sys.argv[2]
    run_training(make_cfg(root, out, steps=1), generator_factory=scripted)
