from .mrcl_vit import MRCLViT

__all__ = ['MRCLViT']
