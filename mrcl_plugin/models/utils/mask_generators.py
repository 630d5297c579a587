"""Patch mask generators: which tokens of each view the encoder never sees,
MRCL's masking as augmentation (arXiv 2211.09013). Random sampling is the
paper's and MAE's (arXiv 2111.06377); block-wise is BEiT's (arXiv
2106.08254); grid-wise a regular lattice.

Every generator is called as ``generator(batch_size, patch_resolution,
mask_ratio, device)`` and returns a bool tensor of shape (B, H*W) in raster
order, True where a patch is masked. Each row masks exactly
``num_masked(H*W, mask_ratio)`` patches, so the visible tokens of a batch stay
rectangular, and each row (hence each view) gets its own mask. Any class
registered in mmpretrain's ``MODELS`` that keeps this contract can be
``model.backbone.mask_generator``; ``MRCLViT`` checks it at every call.
"""
from typing import Tuple

import numpy as np
import torch
from mmpretrain.datasets.transforms import BEiTMaskGenerator
from mmpretrain.registry import MODELS


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """Masked patches per image: MAE keeps int(N * (1 - r)) tokens."""
    return num_patches - int(num_patches * (1 - mask_ratio))


@MODELS.register_module()
class RandomMaskGenerator:
    """MAE's random sampling: shuffle the tokens, drop the tail."""

    def __call__(self, batch_size: int, patch_resolution: Tuple[int, int],
                 mask_ratio: float, device) -> torch.Tensor:
        num_patches = patch_resolution[0] * patch_resolution[1]
        noise = torch.rand(batch_size, num_patches, device=device)
        # The same draw and ranking as MAEViT.random_masking, so a shared seed
        # gives MAE's mask.
        ranks = torch.argsort(torch.argsort(noise, dim=1), dim=1)
        return ranks >= num_patches - num_masked(num_patches, mask_ratio)


@MODELS.register_module()
class BlockMaskGenerator:
    """BEiT's block-wise masking: random rectangles of at least
    ``min_num_patches`` patches with aspect ratios in [min_aspect,
    1/min_aspect], added until exactly the masked count is reached
    (mmpretrain's :class:`BEiTMaskGenerator`, one call per image)."""

    def __init__(self, min_num_patches: int = 4, min_aspect: float = 0.3):
        self.min_num_patches = min_num_patches
        self.min_aspect = min_aspect

    def __call__(self, batch_size: int, patch_resolution: Tuple[int, int],
                 mask_ratio: float, device) -> torch.Tensor:
        num_patches = patch_resolution[0] * patch_resolution[1]
        beit = BEiTMaskGenerator(
            input_size=tuple(patch_resolution),
            num_masking_patches=num_masked(num_patches, mask_ratio),
            min_num_patches=self.min_num_patches,
            min_aspect=self.min_aspect)
        masks = np.stack(
            [beit.transform({})['mask'] for _ in range(batch_size)])
        return torch.from_numpy(masks).reshape(batch_size, -1).bool().to(device)


@MODELS.register_module()
class GridMaskGenerator:
    """Grid-wise masking: a regular lattice of masked patches.

    The masked patches are evenly spaced in raster order, every N/M-th patch
    for N patches and M masked ones (so r=0.25 on a 14x14 grid masks every 4th
    patch), with a random phase per image so views and images differ.
    """

    def __call__(self, batch_size: int, patch_resolution: Tuple[int, int],
                 mask_ratio: float, device) -> torch.Tensor:
        num_patches = patch_resolution[0] * patch_resolution[1]
        count = num_masked(num_patches, mask_ratio)
        mask = torch.zeros(batch_size, num_patches, dtype=torch.bool,
                           device=device)
        if count == 0:
            return mask
        phase = torch.rand(batch_size, 1, device=device)
        steps = torch.arange(count, device=device).unsqueeze(0)
        idx = ((steps + phase) * (num_patches / count)).long()
        return mask.scatter_(1, idx.clamp_(max=num_patches - 1), True)
