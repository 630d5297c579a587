"""What every MRCL learner shares (Liu et al., arXiv 2211.09013).

:class:`MRCL` masks both views, encodes their visible tokens in one pass
and adds the reconstruction regulariser of paper Eq. 16 to its learner's
contrastive loss; :class:`MomentumMRCL` adds the EMA target of BYOL and
MoCo v3. Each learner is a registered subclass in this package.
"""
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from mmengine.logging import print_log
from mmpretrain.models.selfsup.base import BaseSelfSupervisor
from mmpretrain.models.utils import CosineEMA
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import nn

FEATURES = ('cls_token', 'avg_visible')


class MaskedViews(NamedTuple):
    """Both views of a batch as the shared encoder saw them.

    images: (2B, C, H, W), view 1 then view 2, before masking.
    tokens: (2B, 1 + L, D), the encoded class token and L visible tokens.
    mask: (2B, N), 1 where a patch was dropped.
    ids_restore: (2B, N), MAE's order to put the tokens back.
    """
    images: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor


def fp32(loss_fn, *tensors, **kwargs):
    """``loss_fn`` on fp32 copies of ``tensors``, autocast off: under AMP,
    fp16 sums of squares and cross-correlations overflow to inf."""
    with torch.autocast(tensors[0].device.type, enabled=False):
        return loss_fn(*(t.float() for t in tensors), **kwargs)


class MRCL(BaseSelfSupervisor):
    """Masked Reconstruction Contrastive Learning (arXiv 2211.09013), the
    part every contrastive learner shares.

    Two augmented views are masked (``backbone``, an :class:`MRCLViT`), and
    their visible tokens encoded by one shared ViT in one pass. A subclass
    turns the encoded views into the contrastive term of its learner
    (:meth:`contrastive_loss`, through the projector ``neck`` and ``head``
    of mmpretrain's algorithm of that name). The ``decoder`` (an
    :class:`MAEPretrainDecoder`) predicts every patch of each view from its
    visible tokens, and ``rec_head`` weighs the masked and unmasked patches
    (paper Eq. 16)::

        loss = contrastive_weight * L_contrastive
             + sum over views (alpha * L_rec(masked) + lambda * L_rec(unmasked))

    Args:
        backbone (dict): an :class:`MRCLViT`.
        neck (dict): the projector, fed (B, D) features.
        head (dict): the learner's head.
        decoder (dict, optional): an :class:`MAEPretrainDecoder`.
        rec_head (dict, optional): an :class:`MRCLReconstructionHead`. Without
            it, or with alpha = lambda = 0, the decoder is not run.
        contrastive_weight (float): weight of the contrastive loss; at 0 it
            is not computed.
        feature (str): ``'cls_token'`` (the paper's, as MoCo v3) or
            ``'avg_visible'``, the mean of the visible tokens.
    """

    learner = ''  # the contrastive learner's name, set by each subclass

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 decoder: Optional[dict] = None,
                 rec_head: Optional[dict] = None,
                 contrastive_weight: float = 1.0,
                 feature: str = 'cls_token',
                 pretrained: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if feature not in FEATURES:
            raise ValueError(
                f'{type(self).__name__}: feature must be one of {FEATURES}, '
                f'got {feature!r}')
        if contrastive_weight < 0:
            raise ValueError(f'{type(self).__name__}: contrastive_weight '
                             f'must be >= 0, got {contrastive_weight}')
        super().__init__(
            backbone=backbone,
            neck=neck,
            head=head,
            pretrained=pretrained,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        self.feature = feature
        self.contrastive_weight = contrastive_weight
        self.decoder = MODELS.build(decoder) if decoder else None
        self.rec_head = MODELS.build(rec_head) if rec_head else None
        if (self.rec_head is None) != (self.decoder is None):
            raise ValueError(f'{type(self).__name__}: decoder and rec_head go '
                             'together: give both or neither')
        if self.decoder is not None:
            self._check_decoder()

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
                raise ValueError(f'{type(self).__name__}: {key} is {value} '
                                 f'but must match {ref_key} = {ref}')
        if not self.rec_head.active:
            print_log(f'{type(self).__name__}: alpha = lambda = 0, the '
                      'decoder is not run', logger='current')

    def describe(self) -> dict:
        """What this model is, as plain numbers and names: saved in each
        checkpoint's ``meta['mrcl']`` (:class:`MRCLMetaHook`) and read from
        there by the converters and ``tools/analysis_tools/results.py``.

        Returns:
            dict: ``type`` (the class), ``learner``, ``mask_ratio``,
            ``mask_generator``, ``rec_weights`` (``alpha``, ``lambd``; None
            without a decoder), ``contrastive_weight``, ``feature``,
            ``encoder`` (``embed_dims``, ``num_layers``, ``num_heads``,
            ``feedforward_channels``, ``patch_size``, ``img_size``: what
            builds an mmpretrain ``VisionTransformer``) and the pixel
            ``mean`` and ``std`` (0-255) the encoder was trained on.
        """
        backbone, arch = self.backbone, self.backbone.arch_settings
        embed = backbone.patch_embed.projection
        # mmpretrain's preprocessor has mean and std buffers when it
        # normalises
        mean, std = (getattr(self.data_preprocessor, k, None)
                     for k in ('mean', 'std'))
        return dict(
            type=type(self).__name__,
            learner=self.learner,
            mask_ratio=float(backbone.mask_ratio),
            mask_generator=type(backbone.mask_generator).__name__,
            rec_weights=dict(alpha=float(self.rec_head.alpha),
                             lambd=float(self.rec_head.lambd))
            if self.rec_head is not None else None,
            contrastive_weight=float(self.contrastive_weight),
            feature=self.feature,
            encoder=dict(
                embed_dims=int(arch['embed_dims']),
                num_layers=int(arch['num_layers']),
                num_heads=int(arch['num_heads']),
                feedforward_channels=int(arch['feedforward_channels']),
                patch_size=int(embed.kernel_size[0]),
                img_size=int(backbone.patch_resolution[0] *
                             embed.kernel_size[0])),
            mean=None if mean is None else
            [round(v, 4) for v in mean.flatten().tolist()],
            std=None if std is None else
            [round(v, 4) for v in std.flatten().tolist()])

    @property
    def with_reconstruction(self) -> bool:
        return self.rec_head is not None and self.rec_head.active

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L, D) encoder tokens -> (B, D) contrastive features."""
        if self.feature == 'cls_token':
            return tokens[:, 0]
        return tokens[:, 1:].mean(dim=1)

    def extract_feat(self, inputs: torch.Tensor) -> Tuple[torch.Tensor]:
        """Features of unmasked images, (B, D), as used by the projector."""
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
            f'{type(self).__name__} takes two views: use ' \
            'MultiView(num_views=2) in the pipeline'
        images = torch.cat(inputs)  # (2B, C, H, W), one pass for both views
        views = MaskedViews(images, *self.backbone(images))
        losses = dict()
        if self.contrastive_weight > 0:
            losses['loss_contrastive'] = \
                self.contrastive_weight * self.contrastive_loss(views)
        if self.with_reconstruction:
            pred = self.decoder(views.tokens, views.ids_restore)
            losses.update(
                fp32(self.rec_head.loss, pred, images, views.mask,
                     num_views=2))
        return losses

    def contrastive_loss(self, views: MaskedViews) -> torch.Tensor:
        """The learner's loss of the two encoded views, a scalar."""
        raise NotImplementedError


class MomentumMRCL(MRCL):
    """The part MR-BYOL and MR-MoCoV3 share: a target that is an EMA copy of
    ``backbone`` and ``neck`` (mmpretrain's :class:`CosineEMA`), kept under
    the name mmpretrain's algorithm gives it (:attr:`target_name`), so that
    state dicts keep mmpretrain's keys; the online projection of each view,
    through the predictor in ``head``, is trained against the target's
    projection of the other view (``head.loss(online, target)``).

    Args:
        base_momentum (float): the target's EMA momentum.
        target_masked (bool): the target encodes the masked views (True)
            or the full ones.
        **kwargs: see :class:`MRCL`.
    """

    target_name = ''  # the EMA copy's attribute, mmpretrain's name for it
    loss_scale = 1.  # the learner's factor on the sum of the two terms

    def __init__(self, *args, base_momentum: float, target_masked: bool,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.target_masked = target_masked
        setattr(self, self.target_name, CosineEMA(
            nn.Sequential(self.backbone, self.neck), momentum=base_momentum))

    def contrastive_loss(self, views: MaskedViews) -> torch.Tensor:
        f1, f2 = self.pool(views.tokens).chunk(2)
        q1, q2 = self.neck([f1])[0], self.neck([f2])[0]
        k1, k2 = self.momentum_projections(views)
        return self.loss_scale * (fp32(self.head.loss, q1, k2) +
                                  fp32(self.head.loss, q2, k1))

    def momentum_projections(
            self, views: MaskedViews) -> Tuple[torch.Tensor, torch.Tensor]:
        """The target is updated and projects both views, masked as the
        online branch saw them or whole (``target_masked``). Two (B, D')
        tensors, without gradient."""
        ema = getattr(self, self.target_name)
        with torch.no_grad():
            ema.update_parameters(nn.Sequential(self.backbone, self.neck))
            backbone, neck = ema.module
            if self.target_masked:
                tokens = backbone(views.images,
                                  mask=views.mask.bool())[0]
            else:
                tokens = backbone(views.images, mask=None)[-1]
            k1, k2 = self.pool(tokens).chunk(2)
            return neck([k1])[0], neck([k2])[0]
