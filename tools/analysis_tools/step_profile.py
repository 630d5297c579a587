"""Where one train step's time and FLOPs go, by part of the model and by
kernel: ``benchmark_train_step.py --profile``.

Each op of the step belongs to the innermost module it runs in (forward
pre/post hooks open a ``record_function`` range per module), and that
module to a part (:func:`part_of`): the encoder's patch embedding, blocks
and the rest of it (masking, gathers, class token and position
embeddings, final norm), the decoder's blocks and the rest of it, the
projector, the contrastive loss and the reconstruction loss. Ops of the
algorithm's own code (``contrastive_loss``: pooling, gathers, Barlow
Twins' Gram matrices) belong to the contrastive loss. A backward op
belongs to the part of the forward op that recorded it (the profiler's
``sequence_nr``); the optimizer step and what runs outside the model are
parts of their own. Forward FLOPs by part come from ``FlopCounterMode``'s
module tree over a forward alone (matmuls, convolutions, attention).
"""
import re
from collections import defaultdict

from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

PREFIX = 'part: '
PARTS = [  # (module name pattern, part), the first match wins
    (r'data_preprocessor', 'data preprocessor'),
    (r'backbone\.patch_embed', 'encoder: patch embedding'),
    (r'backbone\.layers\.\d+', 'encoder: blocks'),
    (r'backbone', 'encoder: masking, tokens, norm'),
    (r'decoder\.decoder_blocks\.\d+', 'decoder: blocks'),
    (r'decoder', 'decoder: embed, unshuffle, norm, prediction'),
    (r'neck', 'projector'),
    (r'rec_head', 'reconstruction loss'),
    (r'head', 'contrastive loss'),
    (r'', 'contrastive loss'),  # the algorithm's own code
]
OPTIMIZER, OUTSIDE = 'optimizer step', 'outside the model'


def part_of(name: str) -> str:
    """The part of the module named ``name`` in the model ('' for the
    algorithm itself)."""
    return next(part for pattern, part in PARTS
                if re.match(pattern + r'(\.|$)', name) or pattern == '')


def _label_modules(model):
    """Hooks that run each module's forward in a range named by its
    part; their handles."""
    handles = []
    for name, module in model.named_modules():
        ranges = []

        def enter(module, args, label=PREFIX + part_of(name),
                  ranges=ranges):
            ranges.append(record_function(label))
            ranges[-1].__enter__()

        def leave(module, args, output, ranges=ranges):
            ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter),
                    module.register_forward_hook(leave)]
    return handles


def _part(event) -> str:
    while event is not None:
        if event.name.startswith(PREFIX):
            return event.name[len(PREFIX):]
        if event.name.startswith('Optimizer.step'):
            return OPTIMIZER
        event = event.cpu_parent
    return OUTSIDE


def profile_step(step, model) -> dict:
    """Run ``step()`` (one train step of ``model``) under the profiler;
    {'parts': {part: {'forward': s, 'backward': s}}, 'kernels': {op
    name: self s}, 'total': s}."""
    handles = _label_modules(model)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
    finally:
        for h in handles:
            h.remove()
    events = [(e, _backward_node(e)) for e in prof.events()]
    forward_part = {}
    for e, backward in events:  # the forward ops that record autograd nodes
        if e.sequence_nr >= 0 and backward is None:
            forward_part.setdefault(e.sequence_nr, _part(e))
    parts = defaultdict(lambda: dict(forward=0.0, backward=0.0))
    kernels = defaultdict(float)
    for e, backward in events:
        if e.name.startswith(PREFIX):
            continue  # a range: its ops are counted
        seconds = e.self_cpu_time_total / 1e6
        kernels[e.name] += seconds
        if backward is not None:
            part = forward_part.get(backward.sequence_nr, OUTSIDE)
            parts[part]['backward'] += seconds
        else:
            parts[_part(e)]['forward'] += seconds
    total = sum(kernels.values())
    return dict(parts=dict(parts), kernels=dict(kernels), total=total)


def _backward_node(event):
    """The autograd engine's ``evaluate_function`` event that ``event``
    runs in, if any."""
    while event is not None:
        if event.name.startswith('autograd::engine::evaluate_function'):
            return event
        event = event.cpu_parent
    return None


def flops_by_part(counter) -> dict:
    """{part: FLOPs} from a ``FlopCounterMode`` that counted a forward (in
    a backward its module hooks fire out of order). Its counts are by
    module, each including the modules it called; a module's own FLOPs
    (less those of the nearest counted modules inside it) go to its part,
    and those outside every module to the contrastive loss."""
    counts = {name: sum(ops.values())
              for name, ops in counter.get_flop_counts().items()}
    top = 'Global'  # all; then 'MRBarlowTwins', 'MRBarlowTwins.neck', ...
    names = [name for name in counts if name != top]

    def parent(name):
        while '.' in name:
            name = name.rsplit('.', 1)[0]
            if name in counts:
                return name
        return top

    own = dict(counts)
    for name in names:
        own[parent(name)] -= counts[name]
    parts = defaultdict(float)
    for name, flops in own.items():
        inside = name.split('.', 1)[1] if '.' in name else ''
        parts[part_of(inside)] += flops
    return dict(parts)
