"""MSPFN's loss: Charbonnier + 0.05 x Charbonnier of Laplacian edges, computed in [-1, 1] space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPSILON = 1e-3  # Charbonnier: mean(sqrt(d^2 + eps^2))
EDGE_WEIGHT = 0.05


def charbonnier(a: Tensor, b: Tensor) -> Tensor:
    return torch.sqrt((a - b) ** 2 + EPSILON**2).mean()


def laplacian(image: Tensor) -> Tensor:
    """Per-channel 3x3 Laplacian (8 at the centre, -1 around), zero padding."""
    kernel = -torch.ones(3, 3, dtype=image.dtype, device=image.device)
    kernel[1, 1] = 8.0
    channels = image.shape[1]
    return F.conv2d(image, kernel.expand(channels, 1, 3, 3), padding=1, groups=channels)


def l2_loss(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error in [-1, 1] space (used only to warm training up, see mspfn.train)."""
    return F.mse_loss(output * 2 - 1, target * 2 - 1)


def mspfn_loss(output: Tensor, target: Tensor) -> Tensor:
    """Inputs in [0, 1]; the original computes the loss on images scaled to [-1, 1]."""
    out, gt = output * 2 - 1, target * 2 - 1
    return charbonnier(out, gt) + EDGE_WEIGHT * charbonnier(laplacian(out), laplacian(gt))
