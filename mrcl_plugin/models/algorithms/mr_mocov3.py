"""MR-MoCoV3: MRCL (arXiv 2211.09013) on MoCo v3 (Chen et al., arXiv
2104.02057); its momentum encoder is :class:`MomentumMRCL`'s."""
from mmpretrain.registry import MODELS

from .mrcl import MomentumMRCL


@MODELS.register_module()
class MRMoCoV3(MomentumMRCL):
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
    target_name = 'momentum_encoder'

    def __init__(self,
                 *args,
                 base_momentum: float = 0.01,
                 target_masked: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, base_momentum=base_momentum,
                         target_masked=target_masked, **kwargs)
