"""What a measurement ran on, for the line every figure in the docs cites."""
import os
import os.path as osp
import platform

import torch


def machine() -> str:
    """e.g. 'AMD EPYC 7B13 x2 cores, torch 2.14.1+cu130, cpu' (the GPU's
    name instead of 'cpu' where one is visible)."""
    cpu = platform.processor() or platform.machine()
    if osp.isfile('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name')), cpu)
    device = (torch.cuda.get_device_name()
              if torch.cuda.is_available() else 'cpu')
    return (f'{cpu} x{os.cpu_count()} cores, torch {torch.__version__}, '
            f'{device}')
