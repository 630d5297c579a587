"""ViTDet's simple feature pyramid (Li et al., arXiv 2203.16527): the
multi-scale maps Mask R-CNN needs from the single map of a plain ViT, for
the COCO transfer of MRCL encoders (arXiv 2211.09013, Table 2)."""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import nn


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid: strides 4/8/16/32 (and 64) from the
    single stride-16 map of a plain ViT (Li et al. 2022, Sec. 3 and Fig. 2).

    Each scale is made from the last feature map alone: two 2x2 deconvs
    with norm and GELU between for stride 4, one deconv for 8, the map for
    16, a 2x2 max-pool for 32; each then a 1x1 conv + norm and a 3x3 conv +
    norm to ``out_channels``. ``num_outs=5`` adds stride 64 by 1x1 max-pool
    with stride 2 of the last level (detectron2's ``LastLevelMaxPool``),
    the level Mask R-CNN's RPN anchors need.

    Args:
        in_channels (int): channels C of the ViT map.
        out_channels (int): channels of every output. Defaults to 256.
        num_outs (int): 4 (strides 4-32) or 5 (4-64). Defaults to 5.
        norm_cfg (dict): norm after every conv/deconv; ViTDet uses
            LayerNorm over channels. Defaults to ``dict(type='LN2d')``.

    Shapes:
        input: a tuple whose last item is (B, C, H/16, W/16).
        output: tuple of (B, out_channels, H/s, W/s), s = 4, 8, 16, 32(, 64).
    """

    scales = (4.0, 2.0, 1.0, 0.5)

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 num_outs: int = 5,
                 norm_cfg: dict = dict(type='LN2d', eps=1e-6),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_outs not in (4, 5):
            raise ValueError(
                f'neck.num_outs must be 4 or 5 (strides 4-32, or 4-64 with '
                f'the max-pooled extra level), got {num_outs}')
        self.num_outs = num_outs
        C = in_channels
        self.rescales = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(C, C // 2, 2, stride=2),
                          build_norm_layer(norm_cfg, C // 2)[1], nn.GELU(),
                          nn.ConvTranspose2d(C // 2, C // 4, 2, stride=2)),
            nn.ConvTranspose2d(C, C // 2, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2, stride=2),
        ])
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for channels in (C // 4, C // 2, C, C):
            self.lateral_convs.append(
                ConvModule(channels,
                           out_channels,
                           1,
                           bias=False,
                           norm_cfg=norm_cfg,
                           act_cfg=None))
            self.output_convs.append(
                ConvModule(out_channels,
                           out_channels,
                           3,
                           padding=1,
                           bias=False,
                           norm_cfg=norm_cfg,
                           act_cfg=None))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        x = inputs[-1]
        outs: List[torch.Tensor] = [
            output(lateral(rescale(x))) for rescale, lateral, output in zip(
                self.rescales, self.lateral_convs, self.output_convs)
        ]
        if self.num_outs == 5:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
