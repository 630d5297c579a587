"""MAE's decoder (He et al., arXiv 2111.06377), as MRCL (arXiv 2211.09013)
uses it to reconstruct every patch of each view, with its blocks
optionally recomputed in the backward to save activation memory."""
import torch
from mmpretrain.models.necks import MAEPretrainDecoder
from mmpretrain.registry import MODELS
from torch.utils.checkpoint import checkpoint


@MODELS.register_module()
class CheckpointedMAEDecoder(MAEPretrainDecoder):
    """mmpretrain's ``MAEPretrainDecoder`` whose blocks can recompute their
    activations in the backward instead of keeping them (``with_cp``).

    The same modules, weights, state-dict keys and outputs; with ``with_cp``
    a training forward keeps only each block's input, and the backward runs
    each block's forward again (the blocks have no dropout, so the result
    is the same). On MR-BarlowTwins ViT-B/16 at 64 images x 2 views the
    paper's 8 x 512 decoder keeps more for the backward than MRCL saves in
    the encoder by masking 20% of the tokens; with ``with_cp`` MRCL keeps
    less than BarlowTwins, for one more decoder forward a step (measured
    in docs/speed.md, "Memory at the paper's batch", with
    ``tools/analysis_tools/activation_memory.py``).

    Args:
        with_cp (bool): checkpoint the decoder blocks. Default False.
        **kwargs: ``MAEPretrainDecoder``'s arguments.
    """

    def __init__(self, *args, with_cp: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor,
                ids_restore: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L_visible, C) encoded tokens and the (B, L) restoring
        permutation -> (B, L, patch_size**2 * 3) pixel predictions, as
        ``MAEPretrainDecoder.forward``, whose steps this repeats so that the
        block loop can checkpoint."""
        if not (self.with_cp and self.training and torch.is_grad_enabled()):
            return super().forward(x, ids_restore)
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(
            x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(
            x_, dim=1,
            index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
