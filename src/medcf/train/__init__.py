"""medcf.train: the shared training engine (and one training recipe per backbone).

Example:
    >>> from medcf.train import TrainConfig, Trainer, Hook
    >>> cfg = TrainConfig(out_dir="runs/x", steps=100, batch_size=32)
"""

from medcf.train.ema import EMA
from medcf.train.engine import Hook, TrainConfig, Trainer

__all__ = ["EMA", "Hook", "TrainConfig", "Trainer"]
