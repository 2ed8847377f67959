"""The distribution of molecule sizes, learned from the training split and sampled from."""

from __future__ import annotations

import numpy as np
import torch


class NodeCountDistribution:
    """Categorical distribution over atom counts, estimated from training molecules."""

    def __init__(self, counts: np.ndarray | torch.Tensor) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.size == 0 or counts.min() < 1:
            raise ValueError("node counts must be positive and there must be at least one")
        self.max_nodes = int(counts.max())
        hist = np.bincount(counts, minlength=self.max_nodes + 1).astype(np.float64)
        self.probs = torch.tensor(hist / hist.sum())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n atom counts drawn from the training distribution."""
        return torch.multinomial(self.probs, n, replacement=True, generator=generator)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"probs": self.probs.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> NodeCountDistribution:
        obj = cls.__new__(cls)
        obj.probs = state["probs"].double()
        obj.max_nodes = int(len(obj.probs) - 1)
        return obj
