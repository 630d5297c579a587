"""MRCL's encoder (arXiv 2211.09013): MAE's ViT (He et al., arXiv
2111.06377) dropping a ratio r of each view's patches as augmentation,
with any registered mask generator, and mmpretrain's
``VisionTransformer`` weights, so the encoder transfers unchanged."""
from typing import Optional, Tuple, Union

import torch
from mmengine.registry import DefaultScope
from mmpretrain.models import MAEViT
from mmpretrain.registry import MODELS

from ..utils.mask_generators import num_masked


@MODELS.register_module()
class MRCLViT(MAEViT):
    """MAE's ViT encoder with MRCL's masking as augmentation.

    The parameters are those of mmpretrain's :class:`VisionTransformer`, so the
    weights load into it (and into mmseg/mmdet through it) unchanged.

    Args:
        mask_ratio (float): ratio r of patches dropped from each view, in
            [0, 1). Defaults to 0.2, the paper's best.
        mask_generator (dict): any registered mask generator (the contract
            is in ``models/utils/mask_generators.py``, checked at each
            call). Defaults to random sampling.
        **kwargs: the arguments of :class:`MAEViT`.
    """

    def __init__(self,
                 mask_ratio: float = 0.2,
                 mask_generator: dict = dict(type='RandomMaskGenerator'),
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 **kwargs) -> None:
        if not 0 <= mask_ratio < 1:
            raise ValueError(f'{type(self).__name__}: mask_ratio must be in '
                             f'[0, 1), got {mask_ratio}')
        sizes = img_size if isinstance(img_size, (tuple, list)) else (
            img_size, img_size)
        if any(s % patch_size for s in sizes):
            raise ValueError(
                f'{type(self).__name__}: img_size {img_size} must be divisible '
                f'by patch_size {patch_size}')
        kind = mask_generator.get('type')
        if isinstance(kind, str) and MODELS.get(kind) is None:
            raise ValueError(
                f'{type(self).__name__}: mask_generator.type {kind!r} is '
                'not registered (mmpretrain.registry.MODELS; register yours '
                'with @MODELS.register_module())')
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            mask_ratio=mask_ratio,
            **kwargs)
        # from mmpretrain's registry, the one checked above, whatever scope
        # the caller builds in (an mmdet or mmseg config's leaves theirs)
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            self.mask_generator = MODELS.build(mask_generator)

    @property
    def num_visible(self) -> int:
        """Visible patch tokens per view."""
        return self.num_patches - num_masked(self.num_patches,
                                             self.mask_ratio)

    def _check_mask(self, mask, batch_size: int) -> None:
        """A generator's mask must be (B, N) bool with exactly the masked
        count in every row: otherwise masked patches would be encoded, or
        visible ones dropped, with no error."""
        name = type(self.mask_generator).__name__
        want = (batch_size, self.num_patches)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool \
                or tuple(mask.shape) != want:
            got = (f'{tuple(mask.shape)} {mask.dtype}' if isinstance(
                mask, torch.Tensor) else type(mask).__name__)
            raise ValueError(
                f'{type(self).__name__}: mask_generator {name} returned '
                f'{got}, '
                f'expected a {want} torch.bool mask')
        count = self.num_patches - self.num_visible
        counts = mask.sum(1)
        wrong = (counts != count).nonzero()
        if len(wrong):
            row = wrong[0, 0].item()
            raise ValueError(
                f'{type(self).__name__}: mask_generator {name} masked '
                f'{counts[row].item()} of {self.num_patches} patches in row '
                f'{row}, expected exactly {count} (mask_ratio '
                f'{self.mask_ratio})')

    # Eager under torch.compile (CompileHook): a generator is
    # any Python (BEiT's is numpy) and the check is data-dependent, and
    # inductor's own RNG would draw other masks than eager for a seed.
    @torch.compiler.disable
    def draw_mask(self, batch_size: int, device) -> torch.Tensor:
        """A new (B, N) bool mask from the mask generator, checked."""
        mask = self.mask_generator(batch_size, self.patch_resolution,
                                   self.mask_ratio, device)
        self._check_mask(mask, batch_size)
        return mask

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[Union[bool, torch.Tensor]] = True
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches of a batch of views.

        Args:
            x (Tensor): views, (B, C, H, W).
            mask (bool | Tensor): True draws a new mask per image from the
                mask generator; a (B, N) bool tensor (True = masked) reuses
                that mask; None or False runs the plain ViT (MAEViT's
                behaviour).

        Returns:
            tuple: ``latent`` (B, 1 + N_visible, C), the class token first
            and the visible tokens after it, final norm applied; ``mask``
            (B, N) float, 1 = masked, as MAE; ``ids_restore`` (B, N), the
            index that puts [visible, masked] tokens back in raster order.
        """
        if mask is None or mask is False:
            return super().forward(x, mask=None)
        B = x.shape[0]
        if mask is True:
            mask = self.draw_mask(B, x.device)
        # Visible tokens first, in raster order; stable so ids are exact.
        ids_shuffle = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :self.num_visible]

        x = self.patch_embed(x)[0] + self.pos_embed[:, 1:, :]
        x = torch.gather(
            x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        cls_token = (self.cls_token + self.pos_embed[:, :1, :]).expand(
            B, -1, -1)
        x = torch.cat((cls_token, x), dim=1)
        for layer in self.layers:
            x = layer(x)
        return self.norm1(x), mask.to(x.dtype), ids_restore
