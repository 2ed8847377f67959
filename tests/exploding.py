"""A score network whose output grows without bound, so every sample diverges (for the
tests of what a user is told when nothing could be generated)."""

import torch


class ExplodingScore(torch.nn.Module):
    """An eps network whose predictions throw every molecule past 100 A at the first step."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1e6))

    def forward(self, zx, zh, t, batch, edge_index=None, context=None):
        return self.scale * zx, torch.zeros_like(zh)
