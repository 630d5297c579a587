"""A property-based fuzzer of every reader of checkpoints (hypothesis).

Three generators, each run through the entry points that read what it
makes:

- pickles written opcode by opcode from the opcodes torch's weights-only
  unpickler knows, the globals it and our allow-list admit, and globals
  that run code (each aimed at a canary file), as a bare pickle or inside
  a torch zip: through ``load_checkpoint_file``;
- real ``torch.save`` files of checkpoint-like dicts with the wrong shape
  (meta, state dicts, ``meta['mrcl']``, saved config text, mixed keys):
  through the reader, both converters' command lines, the kNN/dense
  evaluation's ``load_weights``, results.py's reading of an encoder, and
  ``--resume``'s pre-flight;
- DeepSpeed ZeRO folders made from the committed 2-process one with a
  field replaced: through the ZeRO reader, the converter and the resume
  check.

The property: nothing runs (the canary never appears), every refusal is
one ``CheckpointError``/``ConfigError`` line (never another exception or
a traceback), and the process's peak memory rises by at most 1 GB in a
test. CI runs a fixed seed in well under a minute; a longer fuzz:
``MRCL_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest
tests/test_checkpoint_fuzz.py`` (random seeds; hypothesis prints the seed
of any failure and a minimal example).
"""
import contextlib
import copy
import io
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mmengine.config import Config

from mrcl_plugin.checkpoints import CheckpointError, load_checkpoint_file
from mrcl_plugin.checkpoints.converters import main as convert_main
from mrcl_plugin.checkpoints.zero import (MODEL_STATES, STAND_INS,
                                          check_zero_folder)
from mrcl_plugin.evaluation.models import load_weights
from mrcl_plugin.preflight import ConfigError, check_checkpoint
from mrcl_testing import ROOT, SMALL_CIFAR, backbone_cfg, build
from pickle_crafting import (call, dict_of, glob, integer, pickled, text,
                             torch_file, tuple_of)

sys.path.insert(0, str(ROOT / 'tools' / 'analysis_tools'))
import results  # noqa: E402

LONG = int(os.environ.get('MRCL_FUZZ_EXAMPLES', 0))


def examples(ci: int):
    """hypothesis settings: ``ci`` examples of a fixed seed, or
    MRCL_FUZZ_EXAMPLES of random ones."""
    return settings(
        max_examples=LONG or ci, derandomize=not LONG, database=None,
        deadline=None, suppress_health_check=list(HealthCheck))


FUZZ_DIR = Path(tempfile.mkdtemp(prefix='mrcl_fuzz_'))
CANARY = FUZZ_DIR / 'ran'
ZERO_FIXTURE = Path(__file__).parent / 'data' / 'zero_checkpoint'


def one_line_or_data(read, *args):
    """Call a reader; its result, or None where it refused in one line."""
    try:
        result = read(*args)
    except (CheckpointError, ConfigError) as e:
        assert '\n' not in str(e), str(e)
        reason = getattr(e, 'reason', str(e).split(': ', 1)[-1])
        event(f'{read.__name__}: {" ".join(reason.split()[:3])}')
        return None
    event(f'{read.__name__}: read')
    return result


@pytest.fixture(autouse=True)
def _nothing_runs_and_memory_stays_bounded(capfd):
    """The process's peak memory (which only grows) may rise by at most
    1 GB over its peak before the test."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    assert not CANARY.exists(), 'a payload ran'
    out, err = capfd.readouterr()
    assert 'Traceback' not in out + err
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss -
                before) / 1024
    assert grown_mb < 1024, f'peak memory grew by {grown_mb:.0f} MB'


# -- pickles, opcode by opcode -----------------------------------------------

# globals torch's weights-only unpickler or our allow-list admit
ALLOWED = [
    'collections.OrderedDict', 'collections.Counter', 'torch.Size',
    'torch.device', 'torch.FloatTensor', 'torch.Tensor', 'builtins.set',
    'builtins.complex', 'builtins.bytearray', '_codecs.encode',
    'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter',
    'torch._utils._rebuild_meta_tensor_no_storage', 'torch.float32',
    'numpy.ndarray', 'numpy.dtype', 'numpy.core.multiarray._reconstruct',
    'numpy._core.multiarray.scalar', 'builtins.getattr',
    'mmengine.logging.history_buffer.HistoryBuffer',
    'deepspeed.runtime.zero.config.ZeroStageEnum',
    'mmengine.config.config.ConfigDict',
]
# calls that, if anything ran them, would make the canary
PAYLOADS = [
    call('io.open', text(str(CANARY)), text('w')),
    call('builtins.open', text(str(CANARY)), text('w')),
    call('posix.system', text(f'touch {CANARY}')),
    call('builtins.exec', text(f'open({str(CANARY)!r}, "w")')),
    call('builtins.eval', text(f'open({str(CANARY)!r}, "w")')),
    call('subprocess.call', b'(' + text('touch') + text(str(CANARY)) + b'l'),
    call('pathlib.Path.touch', call('pathlib.Path', text(str(CANARY)))),
    call('builtins.getattr', glob('numpy.ndarray'), text('tofile')),
]
ATOMS = st.one_of(
    st.integers(-2**70, 2**70).map(integer),
    st.integers(0, 2**40).map(integer),
    st.text(max_size=12).map(text),
    st.sampled_from([b'N', b'\x88', b'\x89', b')', b']', b'}', b'\x8f',
                     b'G' + b'\x40' * 8]),
    st.sampled_from(ALLOWED).map(glob),
    st.sampled_from(PAYLOADS),
)
OPS = st.sampled_from([
    b'(', b't', b'\x85', b'\x86', b'\x87', b'R', b'\x81', b'b', b'a', b'e',
    b's', b'u', b'q\x00', b'q\x01', b'h\x00', b'h\x01', b'Q'])


@st.composite
def programs(draw):
    """A pickle: atoms and opcodes in any order, and calls of allowed
    globals with atoms for arguments (which reach REDUCE, NEWOBJ and BUILD
    with something on the stack)."""
    calls = st.builds(lambda g, args: glob(g) + tuple_of(*args) + b'R',
                      st.sampled_from(ALLOWED), st.lists(ATOMS, max_size=3))
    builds = st.builds(lambda g, state: glob(g) + b')\x81' + state + b'b',
                       st.sampled_from(ALLOWED), ATOMS)
    parts = draw(st.lists(st.one_of(ATOMS, OPS, calls, builds),
                          min_size=1, max_size=24))
    return pickled(b''.join(parts))


@examples(ci=400)
@given(pkl=programs(), in_zip=st.booleans())
def test_crafted_pickles_run_nothing(pkl, in_zip):
    path = FUZZ_DIR / 'crafted.pth'
    path.write_bytes(torch_file(pkl) if in_zip else pkl)
    ckpt = one_line_or_data(load_checkpoint_file, path)
    assert ckpt is None or isinstance(ckpt, dict)


def test_each_payload_alone_is_refused():
    """The payloads the fuzzer mixes in, each as a whole checkpoint."""
    for payload in PAYLOADS:
        path = FUZZ_DIR / 'payload.pth'
        path.write_bytes(torch_file(pickled(dict_of(meta=payload))))
        with pytest.raises(CheckpointError, match='refused: it pickles'):
            load_checkpoint_file(path)


# -- checkpoints of the wrong shape ------------------------------------------

VIT = ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
       'layers.0.attn.qkv.weight', 'layers.0.ffn.layers.0.0.weight',
       'layers.1.attn.qkv.weight', 'ln1.weight')
tensors = st.builds(lambda shape: torch.zeros(shape),
                    st.lists(st.integers(0, 4), max_size=4))
leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6),
                   st.floats(allow_nan=True), st.text(max_size=20), tensors)
values = st.recursive(
    leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner,
                        max_size=3)), max_leaves=8)
keys = st.one_of(st.sampled_from(['backbone.' + k for k in VIT]),
                 st.sampled_from(list(VIT)), st.text(max_size=10),
                 st.integers(0, 3))
state_dicts = st.one_of(st.dictionaries(keys, tensors, max_size=8), values)
mrcl_metas = st.one_of(values, st.fixed_dictionaries({}, optional=dict(
    type=st.one_of(st.just('MRBarlowTwins'), values),
    learner=st.one_of(st.sampled_from(['barlowtwins', 'simclr', 'mae']),
                      values),
    mask_ratio=st.one_of(st.floats(-1, 2), values),
    rec_weights=st.one_of(st.none(), values),
    encoder=st.one_of(st.fixed_dictionaries(dict(
        embed_dims=st.integers(0, 8), num_layers=st.integers(0, 3),
        num_heads=st.integers(0, 4), feedforward_channels=st.integers(0, 8),
        patch_size=st.integers(0, 4), img_size=st.integers(0, 8))), values),
    mean=values, std=values, max_iters=values, max_epochs=values)))
config_texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from([
        "model = dict(type='MAE', backbone=dict(mask_ratio=0.75))",
        "gpu_ids = [0, 1]",
        f"open({str(CANARY)!r}, 'w')",
        f"import os; os.system('touch {CANARY}')",
        "_base_ = ['/nonexistent.py']",
        "custom_imports = dict(imports=['antigravity'])"]))
metas = st.one_of(values, st.fixed_dictionaries({}, optional=dict(
    mrcl=mrcl_metas, cfg=st.one_of(config_texts, values),
    config=st.one_of(config_texts, values),
    iter=st.one_of(st.integers(0, 9), values),
    epoch=st.one_of(st.integers(0, 9), values),
    learner=st.one_of(st.sampled_from(['simclr', 'mae']), values),
    mask_ratio=values, max_epochs=values)))
checkpoints = st.fixed_dictionaries({}, optional=dict(
    state_dict=state_dicts, meta=metas, model=state_dicts,
    optimizer=values, message_hub=values)).flatmap(
        lambda d: st.dictionaries(keys, values, max_size=2).map(
            lambda extra: {**extra, **d}))


@pytest.fixture(scope='module')
def tiny_vit():
    return build(dict(type='MRCLViT', arch=dict(
        embed_dims=8, num_layers=2, num_heads=2, feedforward_channels=8),
        img_size=8, patch_size=4, mask_ratio=0.0))


@pytest.fixture(scope='module')
def resume_cfg():
    cfg = Config.fromfile(str(SMALL_CIFAR))
    cfg.work_dir = str(FUZZ_DIR / 'work')
    cfg.resume = True
    return cfg


@examples(ci=150)
@given(ckpt=checkpoints)
def test_wrong_shapes_answer_in_one_line(ckpt, tiny_vit, resume_cfg):
    path = FUZZ_DIR / 'shape.pth'
    try:
        torch.save(ckpt, path)
    except (TypeError, ValueError, RuntimeError):
        return  # torch cannot write it; no file to read
    one_line_or_data(load_checkpoint_file, path)
    for target in ('mmpretrain', 'timm'):
        with contextlib.redirect_stderr(io.StringIO()) as err:
            status = convert_main(target, [str(path), str(FUZZ_DIR / 'o')])
        assert status in (0, 1) and err.getvalue().count('\n') <= 1
    model = torch.nn.Module()
    model.backbone = tiny_vit
    one_line_or_data(load_weights, model, str(path))
    results._encoder(str(path))
    resume_cfg.load_from = str(path)
    one_line_or_data(check_checkpoint, resume_cfg)


# -- a real MRCL checkpoint, changed in a few places -------------------------


@pytest.fixture(scope='module')
def real_checkpoint(mrcl_checkpoint):
    """The session's small MRCL checkpoint without its optimizer state (to
    keep each example's file small): state_dict, meta with meta['mrcl']."""
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    return dict(state_dict=ckpt['state_dict'], meta=ckpt['meta'])


def paths(d, prefix=()):
    """Every (key, ...) path to a value in nested dicts."""
    for k, v in d.items():
        yield prefix + (k, )
        if isinstance(v, dict):
            yield from paths(v, prefix + (k, ))


@st.composite
def changes(draw, ckpt):
    """1-3 places of ``ckpt``, each removed, given a value of the wrong
    kind, or (a tensor) given another shape."""
    chosen = draw(st.lists(st.sampled_from(sorted(paths(ckpt), key=str)),
                           min_size=1, max_size=3, unique=True))
    return [(path, draw(st.one_of(st.just('absent'), values, tensors)))
            for path in chosen]


@examples(ci=60)
@given(data=st.data())
def test_a_real_checkpoint_changed_answers_in_one_line(data, real_checkpoint,
                                                       tiny_vit, resume_cfg):
    ckpt = copy.deepcopy(real_checkpoint)
    for path, value in data.draw(changes(real_checkpoint)):
        where = ckpt
        for key in path[:-1]:
            where = where.get(key) if isinstance(where, dict) else None
        if not isinstance(where, dict):
            continue  # an earlier change removed its parent
        if value == 'absent':
            where.pop(path[-1], None)
        else:
            where[path[-1]] = value
    path = FUZZ_DIR / 'changed.pth'
    torch.save(ckpt, path)
    one_line_or_data(load_checkpoint_file, path)
    for target in ('mmpretrain', 'timm'):
        with contextlib.redirect_stderr(io.StringIO()) as err, \
                contextlib.redirect_stdout(io.StringIO()):
            status = convert_main(target, [str(path), str(FUZZ_DIR / 'o')])
        assert status in (0, 1) and err.getvalue().count('\n') <= 1
        event(f'{target} converter: ' + ('wrote' if status == 0 else
                                         err.getvalue()[:40].strip()))
    model = torch.nn.Module()
    model.backbone = tiny_vit
    one_line_or_data(load_weights, model, str(path))
    results._encoder(str(path))
    resume_cfg.load_from = str(path)
    one_line_or_data(check_checkpoint, resume_cfg)


# -- DeepSpeed folders -------------------------------------------------------

ZERO_FIELDS = ['ds_config', 'module', 'dp_world_size', 'param_shapes',
               'mp_world_size', 'meta', 'shared_params', 'optimizer_state_dict',
               'single_partition_of_fp32_groups']


@examples(ci=60)
@given(field=st.sampled_from(ZERO_FIELDS), value=st.one_of(values, st.just(
    'absent')), rank=st.integers(0, 1))
def test_zero_folders_of_the_wrong_shape(field, value, rank):
    folder = FUZZ_DIR / 'zero' / 'epoch_1.pth'
    shutil.rmtree(folder.parent, ignore_errors=True)
    shutil.copytree(ZERO_FIXTURE, folder)
    name = MODEL_STATES if field not in ZERO_FIELDS[-2:] else \
        f'bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt'
    ckpt = load_checkpoint_file(folder / name, stand_ins=STAND_INS)
    where = ckpt['optimizer_state_dict'] if field == ZERO_FIELDS[-1] \
        else ckpt
    if value == 'absent':
        where.pop(field, None)
    else:
        where[field] = value
    try:
        torch.save(ckpt, folder / name)
    except (TypeError, ValueError, RuntimeError):
        return
    one_line_or_data(check_zero_folder, folder)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        status = convert_main('mmpretrain', [str(folder), str(FUZZ_DIR / 'o')])
    assert status in (0, 1) and err.getvalue().count('\n') <= 1
