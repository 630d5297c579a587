from .mrcl import MRCL

__all__ = ['MRCL']
