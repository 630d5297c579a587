from typing import Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmpretrain.models.selfsup.simclr import SimCLR
from mmpretrain.models.utils import CosineEMA
from mmpretrain.models.selfsup.base import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import nn

from ..utils import GatherLayer

VARIANTS = ('barlowtwins', 'simclr', 'byol', 'mocov3')
FEATURES = ('cls_token', 'avg_visible')
# mmpretrain's defaults for the momentum target and the scale of its loss.
MOMENTUM = dict(byol=0.004, mocov3=0.01)
MOMENTUM_LOSS_SCALE = dict(byol=2.0, mocov3=1.0)


@MODELS.register_module()
class MRCL(BaseSelfSupervisor):
    """Masked Reconstruction Contrastive Learning.

    Two augmented views are masked (``backbone``, an :class:`MRCLViT`), their
    visible tokens encoded by one shared ViT, and the class token (or the
    mean visible token) goes through the projector ``neck`` and the
    contrastive ``head`` of the ``variant``, as in mmpretrain's algorithm of
    that name. The ``decoder`` (an :class:`MAEPretrainDecoder`) predicts every
    patch of each view from its visible tokens, and ``rec_head`` weighs the
    masked and unmasked patches (paper Eq. 16)::

        loss = contrastive_weight * L_contrastive
             + sum over views (alpha * L_rec(masked) + lambda * L_rec(unmasked))

    Args:
        backbone (dict): an :class:`MRCLViT`.
        neck (dict): the projector, fed (B, C) features.
        head (dict): the variant's head: ``LatentCrossCorrelationHead``
            (barlowtwins), ``ContrastiveHead`` (simclr), ``LatentPredictHead``
            (byol) or ``MoCoV3Head`` (mocov3).
        variant (str): one of ``VARIANTS``.
        decoder (dict, optional): an :class:`MAEPretrainDecoder`.
        rec_head (dict, optional): an :class:`MRCLReconstructionHead`. Without
            it, or with alpha = lambda = 0, the decoder is not run.
        contrastive_weight (float): weight of the contrastive loss.
        feature (str): ``'cls_token'`` (the paper's, as MoCo v3) or
            ``'avg_visible'``, the mean of the visible tokens.
        base_momentum (float, optional): EMA momentum of the byol/mocov3
            target; mmpretrain's default for the variant if None.
        target_masked (bool): whether the byol/mocov3 target encodes the same
            masked views as the online branch (True: the mask is part of the
            view's augmentation, paper Eq. 15) or the full views.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 variant: str = 'barlowtwins',
                 decoder: Optional[dict] = None,
                 rec_head: Optional[dict] = None,
                 contrastive_weight: float = 1.0,
                 feature: str = 'cls_token',
                 base_momentum: Optional[float] = None,
                 target_masked: bool = True,
                 pretrained: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(
                f'model.variant must be one of {VARIANTS}, got {variant!r}')
        if feature not in FEATURES:
            raise ValueError(
                f'model.feature must be one of {FEATURES}, got {feature!r}')
        if contrastive_weight < 0:
            raise ValueError('model.contrastive_weight must be >= 0, got '
                             f'{contrastive_weight}')
        super().__init__(
            backbone=backbone,
            neck=neck,
            head=head,
            pretrained=pretrained,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self.variant = variant
        self.feature = feature
        self.contrastive_weight = contrastive_weight
        self.target_masked = target_masked
        self.decoder = MODELS.build(decoder) if decoder else None
        self.rec_head = MODELS.build(rec_head) if rec_head else None
        if (self.rec_head is None) != (self.decoder is None):
            raise ValueError('model.decoder and model.rec_head go together: '
                             'give both or neither')
        if self.decoder is not None:
            self._check_decoder()
        if variant in MOMENTUM:
            self.target_net = CosineEMA(
                nn.Sequential(self.backbone, self.neck),
                momentum=base_momentum or MOMENTUM[variant])

    def _check_decoder(self) -> None:
        embed = self.backbone.patch_embed.projection
        pairs = (
            ('decoder.num_patches', self.decoder.num_patches,
             'backbone patches', self.backbone.num_patches),
            ('decoder.embed_dim', self.decoder.decoder_embed.in_features,
             'backbone.embed_dims', self.backbone.embed_dims),
            ('rec_head.patch_size', self.rec_head.patch_size,
             'backbone.patch_size', embed.kernel_size[0]),
            ('rec_head.in_channels', self.rec_head.in_channels,
             'backbone.in_channels', embed.in_channels),
            ('decoder output (patch_size**2 * in_chans)',
             self.decoder.decoder_pred.out_features,
             'rec_head patch_size**2 * in_channels',
             self.rec_head.patch_size**2 * self.rec_head.in_channels),
        )
        for key, value, ref_key, ref in pairs:
            if value != ref:
                raise ValueError(f'model.{key} is {value} but must match '
                                 f'{ref_key} = {ref}')
        if not self.rec_head.active:
            print_log('MRCL: alpha = lambda = 0, the decoder is not run',
                      logger='current')

    @property
    def with_reconstruction(self) -> bool:
        return self.rec_head is not None and self.rec_head.active

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L, C) encoder tokens -> (B, C) contrastive features."""
        if self.feature == 'cls_token':
            return tokens[:, 0]
        return tokens[:, 1:].mean(dim=1)

    def extract_feat(self, inputs: torch.Tensor) -> Tuple[torch.Tensor]:
        """Features of unmasked images, (B, C), as used by the projector."""
        return (self.pool(self.backbone(inputs, mask=None)[-1]), )

    def loss(self, inputs: List[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """
        Args:
            inputs (list[Tensor]): two views, each (B, C, H, W).

        Returns:
            dict: ``loss_contrastive`` and, with reconstruction,
            ``loss_rec_masked`` and ``loss_rec_unmasked``.
        """
        assert isinstance(inputs, list) and len(inputs) == 2, \
            'MRCL takes two views: use MultiView(num_views=2) in the pipeline'
        views = torch.cat(inputs)  # (2B, C, H, W), one pass for both views
        latent, mask, ids_restore = self.backbone(views)
        losses = dict()
        if self.contrastive_weight > 0:
            f1, f2 = self.pool(latent).chunk(2)
            contrastive = getattr(self, f'_loss_{self.variant}')
            losses['loss_contrastive'] = self.contrastive_weight * \
                contrastive(f1, f2, views, mask)
        if self.with_reconstruction:
            pred = self.decoder(latent, ids_restore)
            losses.update(self.rec_head.loss(pred, views, mask, num_views=2))
        return losses

    def _loss_barlowtwins(self, f1, f2, views, mask) -> torch.Tensor:
        # The cross-correlation of the global batch, as one process computes
        # it. mmpretrain's head.loss normalises each process's projections
        # with that process's statistics (its bn is a BatchNorm1d) and sums
        # the per-process matrices with a gradient-less all_reduce, which
        # differs from it with several processes.
        z1, z2 = (torch.cat(GatherLayer.apply(self.neck([f])[0]))
                  for f in (f1, f2))
        c = self.head.bn(z1).T @ self.head.bn(z2) / z1.size(0)
        return self.head.loss_module(c)

    def _loss_simclr(self, f1, f2, views, mask) -> torch.Tensor:
        # mmpretrain's SimCLR interleaves the views: (v1_0, v2_0, v1_1, ...).
        z = self.neck([torch.stack((f1, f2), 1).flatten(0, 1)])[0]
        z = z / (torch.norm(z, p=2, dim=1, keepdim=True) + 1e-10)
        z = torch.cat(GatherLayer.apply(z), dim=0)
        s = torch.matmul(z, z.permute(1, 0))
        keep, pos_idx, neg_mask = SimCLR._create_buffer(z.size(0) // 2,
                                                        s.device)
        s = torch.masked_select(s, keep == 1).reshape(s.size(0), -1)
        positive = s[pos_idx].unsqueeze(1)
        negative = torch.masked_select(s, neg_mask == 1).reshape(s.size(0), -1)
        return self.head.loss(positive, negative)

    def _loss_momentum(self, f1, f2, views, mask) -> torch.Tensor:
        q1, q2 = self.neck([f1])[0], self.neck([f2])[0]
        with torch.no_grad():
            self.target_net.update_parameters(
                nn.Sequential(self.backbone, self.neck))
            backbone, neck = self.target_net.module
            if self.target_masked:
                tokens = backbone(views, mask=mask.bool())[0]
            else:
                tokens = backbone(views, mask=None)[-1]
            t1, t2 = self.pool(tokens).chunk(2)
            k1, k2 = neck([t1])[0], neck([t2])[0]
        return MOMENTUM_LOSS_SCALE[self.variant] * (
            self.head.loss(q1, k2) + self.head.loss(q2, k1))

    _loss_byol = _loss_mocov3 = _loss_momentum
