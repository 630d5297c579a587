"""Opt in to distributed training on CPU processes (gloo).

Importing this module applies :func:`mrcl_plugin.compat.
apply_cpu_distributed`: mmengine's distributed init without
``torch.cuda.set_device``, ``SyncBatchNorm`` (the paper's projectors) with
global statistics on CPU tensors, and DDP's SyncBN check skipped for CPU
modules. A config opts in through its ``custom_imports``
(``imports=['mrcl_plugin', 'mrcl_plugin.cpu_distributed']``, as the
``*_gloo.py`` config does); ``tools/train.py`` imports it itself when it
runs a launcher on a machine without a GPU. Nothing else imports it, so GPU
runs and ``import mrcl_plugin`` leave torch and mmengine as they ship.
"""
from .compat import apply_cpu_distributed

apply_cpu_distributed()
