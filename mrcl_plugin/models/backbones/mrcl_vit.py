from typing import Optional, Tuple, Union

import torch
from mmpretrain.models import MAEViT
from mmpretrain.registry import MODELS

from ..utils.mask_generators import num_masked

MASK_GENERATORS = ('RandomMaskGenerator', 'BlockMaskGenerator',
                   'GridMaskGenerator')


@MODELS.register_module()
class MRCLViT(MAEViT):
    """MAE's ViT encoder with MRCL's masking as augmentation.

    The parameters are those of mmpretrain's :class:`VisionTransformer`, so the
    weights load into it (and into mmseg/mmdet through it) unchanged.

    Args:
        mask_ratio (float): ratio r of patches dropped from each view, in
            [0, 1). Defaults to 0.2, the paper's best.
        mask_generator (dict): one of ``MASK_GENERATORS``. Defaults to
            random sampling.
        **kwargs: the arguments of :class:`MAEViT`.
    """

    def __init__(self,
                 mask_ratio: float = 0.2,
                 mask_generator: dict = dict(type='RandomMaskGenerator'),
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 **kwargs) -> None:
        if not 0 <= mask_ratio < 1:
            raise ValueError(
                f'model.backbone.mask_ratio must be in [0, 1), got {mask_ratio}')
        sizes = img_size if isinstance(img_size, (tuple, list)) else (
            img_size, img_size)
        if any(s % patch_size for s in sizes):
            raise ValueError(
                f'model.backbone.img_size {img_size} must be divisible by '
                f'model.backbone.patch_size {patch_size}')
        if mask_generator.get('type') not in MASK_GENERATORS:
            raise ValueError(
                f'model.backbone.mask_generator.type must be one of '
                f'{MASK_GENERATORS}, got {mask_generator.get("type")!r}')
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            mask_ratio=mask_ratio,
            **kwargs)
        self.mask_generator = MODELS.build(mask_generator)

    @property
    def num_visible(self) -> int:
        """Visible patch tokens per view."""
        return self.num_patches - num_masked(self.num_patches,
                                             self.mask_ratio)

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
            mask = self.mask_generator(B, self.patch_resolution,
                                       self.mask_ratio, x.device)
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
