from .gather import GatherLayer
from .mask_generators import (BlockMaskGenerator, GridMaskGenerator,
                              RandomMaskGenerator, num_masked)

__all__ = [
    'RandomMaskGenerator', 'BlockMaskGenerator', 'GridMaskGenerator',
    'num_masked', 'GatherLayer'
]
