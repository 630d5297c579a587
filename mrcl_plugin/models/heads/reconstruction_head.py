"""MRCL's reconstruction regulariser (arXiv 2211.09013, Eq. 12 and 16):
MAE's pixel loss (He et al., arXiv 2111.06377) weighted separately over
the masked (alpha) and the unmasked (lambda) patches of each view."""
from typing import Dict

import torch
from mmpretrain.models import MAEPretrainHead
from mmpretrain.registry import MODELS


@MODELS.register_module()
class MRCLReconstructionHead(MAEPretrainHead):
    """Pixel reconstruction regulariser of MRCL (paper Eq. 12 and 16).

    ``alpha * L(masked patches) + lambda * L(unmasked patches)``, each term
    the mean of the per-patch loss over that view's patches, summed over the
    views. With no masked patch (r = 0) the masked term is 0.

    Args:
        alpha (float): weight of the masked-patch (prediction) term.
        lambd (float): weight of the unmasked-patch (reconstruction) term.
        loss (dict): a :class:`PixelReconstructionLoss`; its ``criterion``
            (L2 or L1) sets the per-pixel penalty.
        norm_pix (bool): normalise each target patch, as MAE.
        patch_size (int), in_channels (int): of the encoder's patches.
    """

    def __init__(self,
                 alpha: float = 1.0,
                 lambd: float = 1.0,
                 loss: dict = dict(type='PixelReconstructionLoss',
                                   criterion='L2'),
                 norm_pix: bool = False,
                 patch_size: int = 16,
                 in_channels: int = 3) -> None:
        for key, value in (('alpha', alpha), ('lambd', lambd)):
            if value < 0:
                raise ValueError(
                    f'{type(self).__name__}: {key} must be >= 0, got '
                    f'{value}')
        super().__init__(
            loss=loss,
            norm_pix=norm_pix,
            patch_size=patch_size,
            in_channels=in_channels)
        self.alpha = alpha
        self.lambd = lambd

    @property
    def active(self) -> bool:
        """Whether the loss has any weight, i.e. the decoder must run."""
        return self.alpha > 0 or self.lambd > 0

    def loss(self, pred: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor, num_views: int = 2) -> Dict[str, torch.Tensor]:
        """
        Args:
            pred (Tensor): decoder output, (V*B, N, P*P*C), views stacked.
            target (Tensor): the views before masking, (V*B, C, H, W).
            mask (Tensor): (V*B, N), 1 = masked.
            num_views (int): V; every image masks the same number of patches,
                so the per-view means sum to V times the mean over the stack.

        Returns:
            dict: ``loss_rec_masked`` and ``loss_rec_unmasked``, weighted.
        """
        per_patch = self.loss_module.penalty(
            pred, self.construct_target(target)).mean(dim=-1)
        losses = dict()
        for key, weight, where in (('loss_rec_masked', self.alpha, mask),
                                   ('loss_rec_unmasked', self.lambd,
                                    1 - mask)):
            # clamp: r = 0 leaves no masked patch, and the term is then 0.
            mean = (per_patch * where).sum() / where.sum().clamp(min=1)
            mean = mean / self.loss_module.channel
            losses[key] = weight * num_views * mean
        return losses
