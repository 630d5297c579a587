import torch
from mmpretrain.registry import MODELS

from ..utils import GatherLayer
from .mrcl import MRCL, MaskedViews, fp32


def cross_correlation_loss(z1: torch.Tensor, z2: torch.Tensor,
                           head) -> torch.Tensor:
    """Barlow Twins' loss of (B, D) projections of the global batch, with
    ``head``'s (a :class:`LatentCrossCorrelationHead`) normalisation and
    :class:`CrossCorrelationLoss`."""
    # the BatchNorm in its buffers' dtype: bf16 where DeepSpeed casts the
    # whole model; the matrix and its sums in fp32 (``fp32``)
    stats = head.bn.running_mean.dtype
    n1, n2 = (head.bn(z.to(stats)).float() for z in (z1, z2))
    c = n1.T @ n2 / z1.size(0)  # (D, D)
    return head.loss_module(c)


@MODELS.register_module()
class MRBarlowTwins(MRCL):
    """MR-BarlowTwins: MRCL (arXiv 2211.09013) on mmpretrain's
    :class:`BarlowTwins` (Zbontar et al., arXiv 2103.03230).

    ``neck`` projects the two views' features and ``head`` (a
    :class:`LatentCrossCorrelationHead`) pushes their cross-correlation
    matrix towards the identity. See :class:`MRCL` for the arguments.
    """

    learner = 'barlowtwins'

    def contrastive_loss(self, views: MaskedViews) -> torch.Tensor:
        # The cross-correlation of the global batch, as one process computes
        # it. mmpretrain's head.loss normalises each process's projections
        # with that process's statistics (its bn is a BatchNorm1d) and sums
        # the per-process matrices with a gradient-less all_reduce, which
        # differs from it with several processes.
        f1, f2 = self.pool(views.tokens).chunk(2)
        z1, z2 = (torch.cat(GatherLayer.apply(self.neck([f])[0]))
                  for f in (f1, f2))
        return fp32(cross_correlation_loss, z1, z2, head=self.head)
