"""MRCL for OpenMMLab: importing this package registers its models, dataset
and hooks in mmpretrain's registries (configs use
``custom_imports=dict(imports=['mrcl_plugin'])``) and makes every checkpoint
mmengine loads, from a file or a URL, read as data
(:func:`mrcl_plugin.compat.apply`, :mod:`mrcl_plugin.checkpoints`). It
changes nothing in torch: CPU distributed runs opt in with
:mod:`mrcl_plugin.cpu_distributed`."""
from . import compat

compat.apply()

from . import checkpoints, datasets, engine, models  # noqa: E402,F401
from .version import __version__  # noqa: E402,F401
