"""benchmarks/dissect_shortcut.py's token-route check (the queries re-rendered with the token switched)."""

import dataclasses
import importlib.util
from pathlib import Path

import torch

from medcf.benchmark.shortcut import QUERY_OFFSET, ShortcutPlan, _configs
from medcf.data.synthetic import SyntheticDataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dissect_shortcut.py"


def _script():
    spec = importlib.util.spec_from_file_location("dissect_shortcut", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _TokenOnly:
    """Positive iff the image differs from the same query rendered without the token."""

    def __init__(self, token_free: torch.Tensor):
        self.token_free = token_free

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:        # [B, C, H, W] -> [B, 2]
        p = ((x - self.token_free).abs().flatten(1).amax(1) > 0.05).float()
        return torch.stack([1 - p, p], 1)


def test_token_route_counts_flips_when_only_the_token_moves_the_classifier():
    plan = dataclasses.replace(ShortcutPlan(), resolution=32)
    cfg = _configs(plan)["shortcut"]
    n = 24
    off = dataclasses.replace(cfg, spurious_rate=0.0, spurious_negative_rate=0.0)
    ds = SyntheticDataset(off, n=n, seed=plan.seed, offset=QUERY_OFFSET)
    clf = _TokenOnly(torch.stack([ds[i]["image"] for i in range(n)]))
    route = _script().token_route(clf, cfg, plan, n=n)
    # the same draws with the token switched: removing it makes every such positive negative, adding
    # it makes every token-free negative positive (a re-render that moved anything else would not)
    assert route["positives_with_token"] >= 1 and route["negatives_without_token"] >= 1
    assert route["removing_flips_positive"] == 1.0 and route["adding_flips_negative"] == 1.0
    assert route["positives_with_token"] + route["negatives_without_token"] <= n
