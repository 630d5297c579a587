"""An all-gather with the gradient of every process's loss, for the losses
MRCL (arXiv 2211.09013) computes on the global batch (SimCLR's InfoNCE,
Barlow Twins' cross-correlation)."""
import torch
from mmengine.dist import all_reduce, get_rank
from mmpretrain.models.selfsup.simclr import GatherLayer as _GatherLayer


class GatherLayer(_GatherLayer):
    """mmpretrain's ``GatherLayer`` (all-gather with a backward), with the
    gradient of every process's loss.

    When every process computes the loss of the whole gathered batch (SimCLR's
    similarity matrix, Barlow Twins' cross-correlation), the gradient of a
    process's input is the sum over processes of the gradients of their
    losses. mmpretrain's backward keeps only this process's own gradient,
    which is 1/world_size of that: after DDP averages, the model would get
    1/world_size of the single-process gradient of the same global batch.
    This backward sums them (all_reduce), so DDP's average is exact.

    ``GatherLayer.apply(x)`` with x (B, ...) returns world_size tensors
    (B, ...), rank order; without distributed training, ``(x, )``.
    """

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        grads = torch.stack(grads)
        all_reduce(grads)
        return grads[get_rank()]
