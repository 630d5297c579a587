"""Encoders: MRCL's masking ViT (arXiv 2211.09013) and ViTDet's plain ViT
backbone, which the MRCL encoder transfers into for COCO detection."""
from .mrcl_vit import MRCLViT
from .vitdet_vit import ViTDetViT, WindowRelPosAttention

__all__ = ['MRCLViT', 'ViTDetViT', 'WindowRelPosAttention']
