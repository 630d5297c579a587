"""Pieces the MRCL models share (arXiv 2211.09013): mask generators and a
gradient-exact all-gather."""
from .gather import GatherLayer
from .mask_generators import (BlockMaskGenerator, GridMaskGenerator,
                              RandomMaskGenerator, num_masked)

__all__ = [
    'RandomMaskGenerator', 'BlockMaskGenerator', 'GridMaskGenerator',
    'num_masked', 'GatherLayer'
]
