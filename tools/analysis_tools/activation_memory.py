"""Where a training step's activation memory lives: the bytes autograd saves
for the backward in one forward, by the module that saved them, for MRCL
and its mmpretrain base algorithm (the models of benchmark_train_step.py).

    python tools/analysis_tools/activation_memory.py --amp bf16 --batch 64 \\
        --sdpa-backend flash_attention

The peak of a step is about its parameters, gradients and AdamW state
(16 bytes a parameter) plus these saved tensors plus the largest transient
of the backward; this tool accounts for the saved tensors, which is where
two models of nearly the same size differ. A tensor is counted once (by
its storage), at the innermost module running when autograd saved it, and
reported under its module path cut at ``--depth`` dots; ``weights`` are
parameters and their autocast copies (saved by every Linear, not
activations). One forward, no backward, in this process.
"""
import argparse
import collections
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from benchmark_train_step import (add_step_arguments, build,  # noqa: E402
                                  load_config, machine_line, make_data,
                                  model_cfgs, optim_cfg)

from mmengine.logging import MMLogger  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402


def saved_bytes(model, optim, data, depth):
    """{module path cut at ``depth``: bytes saved for backward} of one
    forward of ``model.train_step``'s loss."""
    stack, by_module, seen = ['(top)'], collections.Counter(), set()
    params = {p.data_ptr() for p in model.parameters()}
    shapes = {p.shape for p in model.parameters()}  # autocast's copies
    names = {m: n or '(top)' for n, m in model.named_modules()}

    def pre(module, args):
        stack.append(names[module])

    def post(module, args, out):
        stack.pop()

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen.add(key)
            weight = key in params or (t.dim() > 1 and t.dtype != torch.float32
                                       and t.shape in shapes)
            where = 'weights' if weight else '.'.join(
                stack[-1].split('.')[:depth])
            by_module[where] += storage.nbytes()
        return t

    hooks = [m.register_forward_pre_hook(pre) for m in names] + [
        m.register_forward_hook(post) for m in names]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            optim.optim_context(model):
        batch = model.data_preprocessor(data, True)
        losses = model(**batch, mode='loss')
    for h in hooks:
        h.remove()
    del losses
    return by_module


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(p)
    p.add_argument('--depth', type=int, default=2,
                   help='module path components to group by (default 2)')
    args = p.parse_args()
    init_default_scope('mmpretrain')
    MMLogger.get_instance('mmengine', log_level='WARNING')  # no init log
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, _ = load_config(args)
    cfgs, optim = model_cfgs(cfg, False), optim_cfg(cfg, args)
    data = make_data(cfg, args.batch, args.device)
    print(f'machine: {machine_line()}; {args.batch} images x 2 views, '
          f'{optim["type"]} {optim.get("sdpa_backend", "")}')
    gib = 2**30
    for name, model_cfg in cfgs.items():
        model, wrapper = build(model_cfg, optim, args)
        by_module = saved_bytes(model, wrapper, data, args.depth)
        total = sum(by_module.values())
        state = sum(x.numel() for x in model.parameters()) * 16
        print(f'\n{name} ({model_cfg["type"]}): {total / gib:.2f} GiB saved '
              f'for backward; {state / gib:.2f} GiB parameters, gradients '
              'and AdamW state')
        for where, n in sorted(by_module.items(), key=lambda kv: -kv[1]):
            print(f'  {where:<40} {n / gib:7.3f} GiB')
        del model, wrapper


if __name__ == '__main__':
    main()
