from .mrcl_vit import MRCLViT
from .vitdet_vit import ViTDetViT, WindowRelPosAttention

__all__ = ['MRCLViT', 'ViTDetViT', 'WindowRelPosAttention']
