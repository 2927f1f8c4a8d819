"""Model EMA (exponential moving average of the weights), as in timm's `ModelEma` used by the reference
(decay 0.99985). Floating-point parameters and buffers are averaged; integer buffers are copied."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .sandwich import unwrap_model

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps `module`, a frozen copy of the model, as the EMA of the training model's weights.

    `update(model)` after every optimizer step: ema = decay·ema + (1 − decay)·model. With `warmup=True` the decay
    ramps up as min(decay, (1 + n) / (10 + n)) so early averages are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.99985, warmup: bool = False, device: str | None = None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}.")
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        source = unwrap_model(model).state_dict()
        for name, ema_tensor in self.module.state_dict().items():
            model_tensor = source[name].detach().to(ema_tensor.device)
            if ema_tensor.is_floating_point():
                ema_tensor.mul_(decay).add_(model_tensor, alpha=1.0 - decay)
            else:
                ema_tensor.copy_(model_tensor)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "module": self.module.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.warmup = state["warmup"]
        self.num_updates = state["num_updates"]
        self.module.load_state_dict(state["module"])
