"""ViTDet's plain ViT backbone (Li et al. 2022, "Exploring plain vision
transformer backbones for object detection", arXiv 2203.16527, Sec. 3 and
4.1) as mmpretrain's ``VisionTransformer``: window attention in most blocks,
global attention in a few, decomposed relative positions in every
attention. The COCO Mask R-CNN transfer of MRCL encoders (arXiv
2211.09013, Table 2) loads them into it."""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmpretrain.models import VisionTransformer
from mmpretrain.models.backbones.vit_sam import (get_rel_pos,
                                                 window_partition,
                                                 window_unpartition)
from mmpretrain.models.utils import MultiheadAttention, resize_pos_embed
from mmpretrain.registry import MODELS
from torch import nn


class WindowRelPosAttention(MultiheadAttention):
    """mmpretrain's ``MultiheadAttention`` over a token map, in windows and
    with ViTDet's/SAM's decomposed relative positions (MViTv2).

    Attention runs in ``window_size`` x ``window_size`` windows (0: over the
    whole map). As in ViTDet, a map that is not a multiple of the window is
    padded with zeros at the bottom and right (mmpretrain's
    ``window_partition``, the code of SAM and ViTDet) and the padded tokens
    take part in attention unmasked; they are cut off afterwards.

    The relative-position term ``q . R_h[i - i'] + q . R_w[j - j']`` (``q``
    unscaled, as ViTDet) is the additive float mask of
    ``torch.nn.functional.scaled_dot_product_attention``: no explicit
    attention matrix is formed here; the mask itself is one (windows x
    heads x N x N), see docs/transfer.md for what that costs and which
    kernels take it. The tables start at zero, as ViTDet's do for MAE
    weights, and are resized by linear interpolation (``get_rel_pos``) when
    the map is not the one they were made for.

    Args:
        embed_dims (int): channels C.
        num_heads (int): heads.
        window_size (int): window side in tokens; 0 for global attention.
        rel_pos_size (tuple, optional): (h, w) the tables are made for:
            the window, or the token map of a global block; None for no
            relative positions.
        **kwargs: the other arguments of ``MultiheadAttention``.

    Shapes:
        input and output: (B, H, W, C).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: int = 0,
                 rel_pos_size: Optional[Tuple[int, int]] = None,
                 **kwargs) -> None:
        super().__init__(embed_dims, num_heads, **kwargs)
        self.window_size = window_size
        self.use_rel_pos = rel_pos_size is not None
        if self.use_rel_pos:
            h, w = rel_pos_size
            self.rel_pos_h = nn.Parameter(
                torch.zeros(2 * h - 1, self.head_dims))
            self.rel_pos_w = nn.Parameter(
                torch.zeros(2 * w - 1, self.head_dims))

    def rel_pos_mask(self, q: torch.Tensor,
                     hw: Tuple[int, int]) -> torch.Tensor:
        """The decomposed relative-position term of ``q`` (b, heads, h * w,
        d) as (b, heads, h * w, h * w): what mmpretrain's
        ``add_decomposed_rel_pos`` adds to an explicit attention matrix."""
        b, heads, n, d = q.shape
        h, w = hw
        Rh = get_rel_pos(h, h, self.rel_pos_h)  # (h, h, d)
        Rw = get_rel_pos(w, w, self.rel_pos_w)  # (w, w, d)
        r_q = q.reshape(b, heads, h, w, d)
        rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, Rh)
        rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, Rw)
        mask = rel_h[..., :, None] + rel_w[..., None, :]  # (.., h, w, h, w)
        return mask.reshape(b, heads, n, n).to(q.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if self.window_size:
            x, pad_hw = window_partition(x, self.window_size)
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads,
                                  self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = self.rel_pos_mask(q, (h, w)) if self.use_rel_pos else None
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask,
            dropout_p=self.attn_drop if self.training else 0.)
        x = self.proj(x.transpose(1, 2).reshape(b, h, w, C))
        if self.window_size:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        # dropout, drop path (per image) and layer scale after the windows
        return self.out_drop(self.gamma1(self.proj_drop(x)))


@MODELS.register_module()
class ViTDetViT(VisionTransformer):
    """mmpretrain's ``VisionTransformer`` as ViTDet's backbone.

    Every block is mmpretrain's ``TransformerEncoderLayer`` whose attention
    is a :class:`WindowRelPosAttention`: the parameters keep their
    mmpretrain names, so an MRCL or MAE encoder converted for
    ``VisionTransformer`` loads with exactly the relative-position tables
    (``layers.i.attn.rel_pos_h`` / ``rel_pos_w``) missing, which start at
    zero (``PretrainedCheckHook`` accepts exactly those).

    What ViTDet does, done here the same way (detectron2's
    ``modeling/backbone/vit.py``, mmdet's ``projects/ViTDet``):

    - no class token: the pretrained ``cls_token`` is not used and the class
      slot of the checkpoint's position embedding is dropped on load;
    - the absolute position embedding stays at the pretraining grid
      (``pretrain_img_size``) and is interpolated bicubically to the token
      map in every forward (mmpretrain's ``resize_pos_embed``, ViTDet's
      ``get_abs_pos``), so the pretrained table is what is fine-tuned;
    - window attention (``window_size``, 14) in ``window_block_indexes``,
      global attention in the others (for ViT-B blocks 2, 5, 8, 11); a map
      that is not a multiple of the window is zero-padded in each windowed
      block (1024 / 16 = 64 tokens -> 70, 5 x 5 windows);
    - relative-position tables per attention: (2 * 14 - 1) x head dims in
      windowed blocks, (2 * img_size / patch - 1) x head dims in global ones;
    - no final norm, the stride-16 map as output (``out_type='featmap'``).

    Args:
        img_size (int): the detector's input side; sizes the global blocks'
            relative-position tables. Defaults to 1024.
        pretrain_img_size (int, optional): the side the position embedding
            is kept at, that of the pretraining (224); None: ``img_size``.
        window_size (int): window side in tokens; 0: all blocks global.
            Defaults to 14.
        window_block_indexes (Sequence[int], optional): the windowed blocks;
            None: ViTDet's choice, all but the last block of each quarter
            (ViT-B: 0, 1, 3, 4, 6, 7, 9, 10).
        use_rel_pos (bool): relative-position tables. Defaults to True.
        **kwargs: the arguments of ``VisionTransformer``; ``with_cls_token``
            must stay False.

    Shapes:
        input: (B, 3, H, W); output: per ``out_indices``, (B, C, H/p, W/p)
        for ``out_type='featmap'``.
    """

    def __init__(self,
                 arch='base',
                 img_size: int = 1024,
                 patch_size: int = 16,
                 pretrain_img_size: Optional[int] = None,
                 window_size: int = 14,
                 window_block_indexes: Optional[Sequence[int]] = None,
                 use_rel_pos: bool = True,
                 drop_path_rate: float = 0.,
                 out_type: str = 'featmap',
                 with_cls_token: bool = False,
                 final_norm: bool = False,
                 **kwargs) -> None:
        if with_cls_token:
            raise ValueError(
                f'{type(self).__name__}: with_cls_token must be False: '
                'ViTDet drops the class token (no window can hold it)')
        super().__init__(
            arch=arch,
            img_size=pretrain_img_size or img_size,
            patch_size=patch_size,
            drop_path_rate=drop_path_rate,
            out_type=out_type,
            with_cls_token=False,
            final_norm=final_norm,
            **kwargs)
        L = self.num_layers
        if window_block_indexes is None:
            window_block_indexes = [
                i for i in range(L) if (i + 1) % max(L // 4, 1)
            ]
        bad = [i for i in window_block_indexes if not 0 <= i < L]
        if bad:
            raise ValueError(
                f'{type(self).__name__}: window_block_indexes {bad} out of '
                f'range for {L} layers')
        self.window_size = window_size
        self.window_block_indexes = sorted(window_block_indexes)
        grid = (img_size // patch_size, ) * 2
        dpr = np.linspace(0, drop_path_rate, L)
        for i, layer in enumerate(self.layers):
            window = window_size if i in self.window_block_indexes else 0
            old = layer.attn
            layer.attn = WindowRelPosAttention(
                self.embed_dims,
                old.num_heads,
                window_size=window,
                rel_pos_size=((window, window) if window else grid)
                if use_rel_pos else None,
                attn_drop=old.attn_drop,
                proj_drop=old.proj_drop.p,
                dropout_layer=dict(type='DropPath', drop_prob=dpr[i]),
                qkv_bias=old.qkv.bias is not None,
                layer_scale_init_value=kwargs.get('layer_scale_init_value',
                                                  0.))

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs):
        """Drop the class slot of a checkpoint's position embedding (1 + N
        rows, N a square) before mmpretrain resizes it to the grid."""
        name = prefix + 'pos_embed'
        if name in state_dict:
            rows = state_dict[name].shape[1]
            if int(round((rows - 1)**0.5))**2 == rows - 1:
                state_dict[name] = state_dict[name][:, 1:]
        super()._prepare_pos_embed(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        B = x.shape[0]
        x, hw = self.patch_embed(x)
        x = x + resize_pos_embed(self.pos_embed,
                                 self.patch_resolution,
                                 hw,
                                 mode=self.interpolate_mode,
                                 num_extra_tokens=0)
        x = self.pre_norm(self.drop_after_pos(x)).reshape(B, *hw, -1)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)  # (B, H, W, C): the layer's norms and FFN are per
            if i == len(self.layers) - 1 and self.final_norm:  # token
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x.flatten(1, 2), hw))
        return tuple(outs)
