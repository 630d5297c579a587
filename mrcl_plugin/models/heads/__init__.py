"""MRCL's reconstruction head (arXiv 2211.09013, Eq. 12 and 16)."""
from .reconstruction_head import MRCLReconstructionHead

__all__ = ['MRCLReconstructionHead']
