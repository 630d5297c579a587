"""MR-SimCLR: MRCL (arXiv 2211.09013) on SimCLR (Chen et al., arXiv
2002.05709), InfoNCE over the batch gathered from every process."""
import torch
from mmpretrain.models.selfsup.simclr import SimCLR
from mmpretrain.registry import MODELS

from ..utils import GatherLayer
from .mrcl import MRCL, MaskedViews, fp32


def info_nce_logits(z: torch.Tensor):
    """SimCLR's positive and negative similarities of (2B, D) interleaved,
    L2-normalised projections of the global batch: (2B, 1) and
    (2B, 2B - 2)."""
    s = torch.matmul(z, z.permute(1, 0))
    keep, pos_idx, neg_mask = SimCLR._create_buffer(z.size(0) // 2, s.device)
    s = torch.masked_select(s, keep == 1).reshape(s.size(0), -1)
    positive = s[pos_idx].unsqueeze(1)
    negative = torch.masked_select(s, neg_mask == 1).reshape(s.size(0), -1)
    return positive, negative


@MODELS.register_module()
class MRSimCLR(MRCL):
    """MR-SimCLR: MRCL (arXiv 2211.09013) on mmpretrain's :class:`SimCLR`
    (Chen et al., arXiv 2002.05709).

    ``neck`` projects the two views' features and ``head`` (a
    :class:`ContrastiveHead`) is InfoNCE over the global batch, each view's
    positive its other view. See :class:`MRCL` for the arguments.
    """

    learner = 'simclr'

    def contrastive_loss(self, views: MaskedViews) -> torch.Tensor:
        f1, f2 = self.pool(views.tokens).chunk(2)
        # mmpretrain's SimCLR interleaves the views: (v1_0, v2_0, v1_1, ...).
        z = self.neck([torch.stack((f1, f2), 1).flatten(0, 1)])[0]
        z = z / (torch.norm(z, p=2, dim=1, keepdim=True) + 1e-10)
        z = torch.cat(GatherLayer.apply(z), dim=0)
        return fp32(self.head.loss, *info_nce_logits(z))
