import torch
from mmpretrain.models.utils import CosineEMA
from mmpretrain.registry import MODELS
from torch import nn

from .mrcl import MRCL, MaskedViews, fp32


@MODELS.register_module()
class MRBYOL(MRCL):
    """MR-BYOL: MRCL (arXiv 2211.09013) on mmpretrain's :class:`BYOL`
    (Grill et al., arXiv 2006.07733).

    The online ``neck`` and the predictor in ``head`` (a
    :class:`LatentPredictHead`) predict the projections of ``target_net``,
    an EMA copy of ``backbone`` and ``neck``, of the other view.

    Args:
        base_momentum (float): EMA momentum of the target, cosine-annealed
            to 1 (mmpretrain's :class:`CosineEMA`). Defaults to BYOL's.
        target_masked (bool): whether the target encodes the same masked
            views as the online branch (True: the mask is part of the
            view's augmentation, paper Eq. 15) or the full views.
        **kwargs: see :class:`MRCL`.
    """

    learner = 'byol'

    def __init__(self,
                 *args,
                 base_momentum: float = 0.004,
                 target_masked: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.target_masked = target_masked
        self.target_net = CosineEMA(
            nn.Sequential(self.backbone, self.neck), momentum=base_momentum)

    def contrastive_loss(self, views: MaskedViews) -> torch.Tensor:
        f1, f2 = self.pool(views.tokens).chunk(2)
        q1, q2 = self.neck([f1])[0], self.neck([f2])[0]
        k1, k2 = self.momentum_projections(self.target_net, views,
                                           self.target_masked)
        # BYOL's scale: mmpretrain logs 2 * (loss_1 + loss_2).
        return 2. * (fp32(self.head.loss, q1, k2) +
                     fp32(self.head.loss, q2, k1))
