"""Zoo unit tests run on CPU with one intra-op thread (tiny ops; shared 2-core CI machines)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
