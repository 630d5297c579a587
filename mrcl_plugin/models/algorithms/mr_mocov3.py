import torch
from mmpretrain.models.utils import CosineEMA
from mmpretrain.registry import MODELS
from torch import nn

from .mrcl import MRCL, MaskedViews, fp32


@MODELS.register_module()
class MRMoCoV3(MRCL):
    """MR-MoCoV3: MRCL (arXiv 2211.09013) on mmpretrain's :class:`MoCoV3`
    (Chen et al., arXiv 2104.02057).

    The online ``neck`` and the predictor in ``head`` (a
    :class:`MoCoV3Head`) are trained by InfoNCE against the projections of
    ``momentum_encoder``, an EMA copy of ``backbone`` and ``neck``, of the
    other view.

    Args:
        base_momentum (float): EMA momentum of the momentum encoder,
            cosine-annealed to 1 (mmpretrain's :class:`CosineEMA`).
            Defaults to MoCo v3's.
        target_masked (bool): whether the momentum encoder sees the same
            masked views as the online branch (True: the mask is part of
            the view's augmentation, paper Eq. 15) or the full views.
        **kwargs: see :class:`MRCL`.
    """

    learner = 'mocov3'

    def __init__(self,
                 *args,
                 base_momentum: float = 0.01,
                 target_masked: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.target_masked = target_masked
        self.momentum_encoder = CosineEMA(
            nn.Sequential(self.backbone, self.neck), momentum=base_momentum)

    def contrastive_loss(self, views: MaskedViews) -> torch.Tensor:
        f1, f2 = self.pool(views.tokens).chunk(2)
        q1, q2 = self.neck([f1])[0], self.neck([f2])[0]
        k1, k2 = self.momentum_projections(self.momentum_encoder, views,
                                           self.target_masked)
        return (fp32(self.head.loss, q1, k2) + fp32(self.head.loss, q2, k1))
