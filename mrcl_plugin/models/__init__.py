"""The models of MRCL, *Masked Reconstruction Contrastive Learning with
Information Bottleneck Principle* (Liu et al., arXiv 2211.09013), registered
in mmpretrain's ``MODELS``: the four learners (``algorithms``), the masking
ViT encoder and ViTDet's backbone for transfer (``backbones``), the
reconstruction head, decoder and feature pyramid (``heads``, ``necks``) and
the mask generators (``utils``)."""
from .algorithms import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .utils import *  # noqa: F401,F403
