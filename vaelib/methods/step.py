"""The gradient step every training method ends with, and the error it raises on a non-finite loss."""

from __future__ import annotations

import torch


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the epoch, step and last checkpoint."""


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Minimize the scalar `loss` by one optimizer step; a NaN or infinite loss raises NonFiniteLossError
    before any parameter changes, so the caller can name the epoch and the last good checkpoint."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss = {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
