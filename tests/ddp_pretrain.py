"""Run by tests/test_pretrain.py under torchrun: pretrain, then save this rank's parameters.

torchrun --standalone --nproc-per-node 2 tests/ddp_pretrain.py OUT KEY=VALUE...
"""

import os
import sys

import torch

from motionmae.config import load_config
from motionmae.train.pretrain import pretrain

if __name__ == "__main__":
    torch.set_num_threads(1)
    out, overrides = sys.argv[1], sys.argv[2:]
    result = pretrain(load_config("demo", overrides))
    torch.save(result.model.state_dict(), os.path.join(out, f"params-rank{os.environ.get('RANK', '0')}.pt"))
