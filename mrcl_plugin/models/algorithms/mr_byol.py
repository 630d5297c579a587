"""MR-BYOL: MRCL (arXiv 2211.09013) on BYOL (Grill et al., arXiv
2006.07733); its EMA target is :class:`MomentumMRCL`'s."""
from mmpretrain.registry import MODELS

from .mrcl import MomentumMRCL


@MODELS.register_module()
class MRBYOL(MomentumMRCL):
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
    target_name = 'target_net'
    loss_scale = 2.  # BYOL's: mmpretrain logs 2 * (loss_1 + loss_2)

    def __init__(self,
                 *args,
                 base_momentum: float = 0.004,
                 target_masked: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, base_momentum=base_momentum,
                         target_masked=target_masked, **kwargs)
