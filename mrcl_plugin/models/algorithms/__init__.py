"""MRCL's learners (arXiv 2211.09013), one registered class each on the
shared :class:`MRCL`, and :data:`LEARNERS`, the table of them by name."""
from .mr_barlowtwins import MRBarlowTwins
from .mr_byol import MRBYOL
from .mr_mocov3 import MRMoCoV3
from .mr_simclr import MRSimCLR
from .mrcl import MRCL

# The learners, by the name each class gives (``MRBarlowTwins.learner``):
# the one table that checkpoints' meta['mrcl'], the converters, the results
# tool and the study read. A learner's display name is its class's without
# 'MR' (``learner_name``).
LEARNERS = {
    cls.learner: cls
    for cls in (MRBarlowTwins, MRSimCLR, MRBYOL, MRMoCoV3)
}


def learner_name(learner: str) -> str:
    """'BarlowTwins' for 'barlowtwins': the class name without 'MR'; the
    name itself where it is no MRCL learner (e.g. 'mae')."""
    cls = LEARNERS.get(learner)
    return cls.__name__[len('MR'):] if cls else learner


__all__ = [
    'MRCL', 'MRBarlowTwins', 'MRSimCLR', 'MRBYOL', 'MRMoCoV3', 'LEARNERS',
    'learner_name'
]
