"""MRCL for OpenMMLab: importing this package registers its models and hooks
in mmpretrain's registries (configs use
``custom_imports=dict(imports=['mrcl_plugin'])``) and applies the
compatibility fixes of :mod:`mrcl_plugin.compat`."""
from . import compat

compat.apply()

from . import datasets, engine, models  # noqa: E402,F401
from .version import __version__  # noqa: E402,F401
