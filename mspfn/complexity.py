"""Multiply-accumulate count of a model, measured with forward hooks on its conv layers."""

from __future__ import annotations

import torch
from torch import nn


def macs_per_pixel(model: nn.Module, height: int = 256, width: int = 256) -> float:
    """MACs per output pixel at one input size (transposed convs counted as k*k*Cin*Cout*H_in*W_in)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
        kh, kw = module.kernel_size
        per_position = kh * kw * (module.in_channels // module.groups) * module.out_channels
        grid = inputs[0] if isinstance(module, nn.ConvTranspose2d) else output
        total += per_position * grid.shape[0] * grid.shape[-2] * grid.shape[-1]

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width))
    finally:
        for handle in handles:
            handle.remove()
    return total / (height * width)
