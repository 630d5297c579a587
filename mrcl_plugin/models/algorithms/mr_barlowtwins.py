"""MR-BarlowTwins: MRCL (arXiv 2211.09013) on Barlow Twins (Zbontar et al.,
arXiv 2103.03230), the learner of the paper's best ImageNet result, with
Barlow Twins' loss computed without its D x D cross-correlation matrix."""
import torch
from mmpretrain.registry import MODELS

from ..utils import GatherLayer
from .mrcl import MRCL, MaskedViews, fp32


def cross_correlation_loss(z1: torch.Tensor, z2: torch.Tensor,
                           head) -> torch.Tensor:
    """Barlow Twins' loss of (N, D) projections of the global batch, with
    ``head``'s (a :class:`LatentCrossCorrelationHead`) normalisation and
    its :class:`CrossCorrelationLoss`'s ``lambd``, for the cross-correlation
    ``c = n1.T @ n2 / N``::

        sum_i (c_ii - 1)^2 + lambd * sum_{i != j} c_ij^2

    ``c`` itself (D x D: 8192 x 8192 in the paper) is never formed: its
    diagonal is ``(n1 * n2).sum(0) / N`` and the sum of its squares is
    ``sum((n1 @ n1.T) * (n2 @ n2.T)) / N^2``, from two N x N Gram matrices.
    The same value and gradient as ``CrossCorrelationLoss`` on ``c``, whose
    D x D matrix and in-place ops on its views took a share of the step far
    beyond their FLOPs (measured in docs/speed.md, "The bf16 step, part by
    part")."""
    # the BatchNorm in its buffers' dtype: bf16 where DeepSpeed casts the
    # whole model; the sums in fp32 (``fp32``)
    stats = head.bn.running_mean.dtype
    n1, n2 = (head.bn(z.to(stats)).float() for z in (z1, z2))
    n = z1.size(0)
    diag = (n1 * n2).sum(0) / n  # c_ii, (D,)
    squares = ((n1 @ n1.T) * (n2 @ n2.T)).sum() / n**2  # sum_ij c_ij^2
    off_diag = squares - diag.pow(2).sum()
    return (diag - 1).pow(2).sum() + head.loss_module.lambd * off_diag


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
