from .reconstruction_head import MRCLReconstructionHead

__all__ = ['MRCLReconstructionHead']
