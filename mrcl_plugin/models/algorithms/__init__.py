from .mr_barlowtwins import MRBarlowTwins
from .mr_byol import MRBYOL
from .mr_mocov3 import MRMoCoV3
from .mr_simclr import MRSimCLR
from .mrcl import MRCL

__all__ = ['MRCL', 'MRBarlowTwins', 'MRSimCLR', 'MRBYOL', 'MRMoCoV3']
