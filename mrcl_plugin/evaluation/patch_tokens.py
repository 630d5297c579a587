"""The frozen patch tokens of a ViT encoder, for the dense evaluation.

mmpretrain's own ``VisionTransformer`` outputs (``out_indices``,
``out_type='featmap'``) give the patch tokens of chosen blocks: the class
token dropped, the final norm after the last block, the position embedding
interpolated to the input's grid.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, Sequence, Tuple

import torch
import torch.nn.functional as F



def default_blocks(num_layers: int) -> Tuple[int, int]:
    """The block in the middle and the last (0-based, as ``out_indices``):
    3 and 5 of 6, 5 and 11 of 12."""
    return (num_layers // 2 - 1, num_layers - 1)


def check_geometry(backbone, size: int, blocks: Sequence[int]) -> None:
    """The evaluation size must be a whole number of patches and the blocks
    the backbone's.

    Raises:
        ValueError: naming the size or block.
    """
    patch = backbone.patch_embed.projection.stride[0]
    if size % patch:
        raise ValueError(f'the evaluation size {size} is not a multiple of '
                         f'the patch size {patch}')
    depth = len(backbone.layers)
    wrong = [b for b in blocks if not 0 <= b < depth]
    if wrong:
        raise ValueError(f'blocks {wrong}: the backbone has blocks 0 to '
                         f'{depth - 1}')


@contextmanager
def _patch_token_outputs(backbone, blocks: Sequence[int]) -> Iterator:
    """The backbone's forward returns the patch tokens of ``blocks`` as
    (B, C, h, w) maps (mmpretrain ``VisionTransformer``'s own
    ``out_indices`` and ``out_type='featmap'``: the class token dropped,
    the final norm after the last block, the position embedding resized to
    the input's grid), restored after."""
    old = backbone.out_indices, backbone.out_type
    backbone.out_indices, backbone.out_type = list(blocks), 'featmap'
    try:
        yield
    finally:
        backbone.out_indices, backbone.out_type = old


@torch.no_grad()
def patch_features(model, images: torch.Tensor, blocks: Sequence[int],
                   batch_size: int = 64) -> Dict[int, torch.Tensor]:
    """L2-normalised patch tokens of the full (unmasked) images.

    Args:
        model: an mmpretrain model with ``data_preprocessor`` and a
            ``VisionTransformer`` (or subclass: ``MAEViT``, ``MRCLViT``)
            ``backbone``, in eval mode.
        images: (N, 3, S, S) uint8 BGR; S need not be the backbone's
            ``img_size`` (its position embedding is interpolated).
        blocks: 0-based block indices.

    Returns:
        dict: {block: (N, h, w, C) float32}.
    """
    backbone = model.backbone
    check_geometry(backbone, images.shape[-1], blocks)
    device = next(model.parameters()).device
    out = {b: [] for b in blocks}
    with _patch_token_outputs(backbone, blocks):
        for start in range(0, len(images), batch_size):
            inputs = model.data_preprocessor(dict(
                inputs=images[start:start + batch_size],
                data_samples=None))['inputs']
            maps = backbone(inputs.to(device), None) if _maskable(
                backbone) else backbone(inputs.to(device))
            for b, fmap in zip(sorted(blocks), maps):
                out[b].append(F.normalize(
                    fmap.float().permute(0, 2, 3, 1), dim=-1).cpu())
    return {b: torch.cat(v) for b, v in out.items()}


def _maskable(backbone) -> bool:
    """MAEViT's forward masks unless told not to (``mask=None``)."""
    from mmpretrain.models import MAEViT
    return isinstance(backbone, MAEViT)
