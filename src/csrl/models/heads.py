"""Projection heads used on top of the pooled vector during training.

- ``linear_tanh``: Linear then Tanh (SimCSE's MLP).
- ``linear``: a bare Linear (paper B, BERT).
- ``tanh_linear``: Tanh then Linear (paper B, RoBERTa).
- ``none``: identity.

Paper B initialises weight and bias from N(0, 6e-3); SimCSE uses the default Linear init. ``init_std``
selects the former when set.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from csrl.errors import CsrlError

HEADS = ("none", "linear_tanh", "linear", "tanh_linear")


class Head(nn.Module):
    def __init__(self, kind: str, dim: int, *, init_std: float | None = None) -> None:
        super().__init__()
        if kind not in HEADS:
            raise CsrlError(f"unknown head {kind!r}", hint=f"valid heads: {', '.join(HEADS)}")
        self.kind = kind
        self.dim = dim
        self.linear = nn.Linear(dim, dim) if kind != "none" else None
        if self.linear is not None and init_std is not None:
            nn.init.normal_(self.linear.weight, std=init_std)
            nn.init.normal_(self.linear.bias, std=init_std)

    def forward(self, x: Tensor) -> Tensor:
        if self.linear is None:
            return x
        if self.kind == "linear_tanh":
            return torch.tanh(self.linear(x))
        if self.kind == "tanh_linear":
            return self.linear(torch.tanh(x))
        return self.linear(x)
