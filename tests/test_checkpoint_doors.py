"""Every way a checkpoint comes in reads it as data (docs/reliability.md,
the table of doors): a URL of each scheme, ``--resume`` and its saved
config, a file that would rewrite the reader's allow-list, and a DeepSpeed
folder run nothing and answer in one line. Each test shows the door open
without the fix where that can be shown safely (the payload only creates a
canary file)."""
import http.server
import pickle
import shutil
import subprocess
import sys
import threading
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from mrcl_plugin import compat
from mrcl_plugin.checkpoints import (CheckpointError, atomic_path,
                                     load_checkpoint_file)
from mrcl_plugin.checkpoints.zero import MODEL_STATES
from mrcl_testing import (ROOT, SMALL_CIFAR, experiment_name, run_tool,
                          train_command, train_env)
from pickle_crafting import (Canary, call, canary_checkpoint, glob, integer,
                             text, tuple_of, write_torch_file)

ZERO_FIXTURE = Path(__file__).parent / 'data' / 'zero_checkpoint'


def refused(message: str, name) -> bool:
    return (message.endswith(f'{name}: refused: it pickles io.open, which '
                             'no checkpoint holds (nothing in it was run)')
            and '\n' not in message)


# -- URLs: every scheme mmengine registers -----------------------------------


@pytest.fixture
def served(tmp_path):
    """A folder served over http on 127.0.0.1, and its base URL."""
    root = tmp_path / 'www'
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler,
                      directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch hub's cache in tmp_path, where downloads land."""
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    return tmp_path / 'hub' / 'checkpoints'


@pytest.fixture
def crafted_url(served, tmp_path):
    root, base = served
    canary = tmp_path / 'ran'
    canary_checkpoint(root / 'crafted.pth', canary)
    return f'{base}/crafted.pth', canary


def test_a_crafted_url_runs_nothing(crafted_url, hub, tmp_path):
    url, canary = crafted_url
    with pytest.raises(CheckpointError) as error:
        CheckpointLoader.load_checkpoint(url)
    assert refused(str(error.value), url)
    assert not canary.exists()
    assert (hub / 'crafted.pth').is_file()  # torch hub's cache, as before
    # the door as it was: mmengine's own http loader unpickles everything
    mmengine_checkpoint.load_from_http(url, model_dir=str(tmp_path / 'old'))
    assert canary.exists()


def test_named_schemes_end_in_the_same_reader(crafted_url, hub, monkeypatch):
    """open-mmlab://, openmmlab://, mmcls://, torchvision:// and modelzoo://
    name a model whose URL comes from a table; each one's download is read
    as data."""
    url, canary = crafted_url
    table = lambda: {'crafted': url}  # noqa: E731
    for name in ('get_external_models', 'get_mmcls_models',
                 'get_torchvision_models'):
        monkeypatch.setattr(mmengine_checkpoint, name, table)
    for source in ('open-mmlab://crafted', 'openmmlab://crafted',
                   'mmcls://crafted', 'torchvision://crafted',
                   'modelzoo://crafted'):
        with pytest.raises(CheckpointError) as error:
            CheckpointLoader.load_checkpoint(source)
        assert refused(str(error.value), url), source
    with pytest.raises(CheckpointError, match='knows no model'):
        CheckpointLoader.load_checkpoint('open-mmlab://missing')
    assert not canary.exists()


def test_s3_and_pavi_bytes_go_through_the_reader(tmp_path, monkeypatch):
    """s3://, petrel:// and pavi:// fetch with loaders of their own (a file
    backend's bytes, pavi's download); neither package is installed here,
    so each is stood in for by one that hands over the crafted bytes."""
    canary = tmp_path / 'ran'
    crafted = canary_checkpoint(tmp_path / 'crafted.pth', canary)
    import mmengine.fileio
    backend = types.SimpleNamespace(get=lambda path: crafted.read_bytes())
    monkeypatch.setattr(mmengine.fileio, 'get_file_backend',
                        lambda path, backend_args: backend)
    for source in ('s3://bucket/x.pth', 'cluster:s3://bucket/x.pth',
                   'petrel://bucket/x.pth'):
        with pytest.raises(CheckpointError) as error:
            CheckpointLoader.load_checkpoint(source)
        assert refused(str(error.value), source)
    with pytest.raises(CheckpointError) as error:
        CheckpointLoader.load_checkpoint('pavi://model/x.pth')
    assert str(error.value) == ('pavi://model/x.pth: pavi is not installed '
                                '(it loads pavi:// checkpoints)')
    model = types.SimpleNamespace(
        name='x.pth', download=lambda path: shutil.copy(crafted, path))
    pavi = types.ModuleType('pavi')
    pavi.modelcloud = types.SimpleNamespace(get=lambda path: model)
    monkeypatch.setitem(sys.modules, 'pavi', pavi)
    with pytest.raises(CheckpointError) as error:
        CheckpointLoader.load_checkpoint('pavi://model/x.pth')
    assert refused(str(error.value), 'pavi://model/x.pth')
    assert not canary.exists()


def test_a_url_that_does_not_answer_is_one_line(served, hub):
    _, base = served
    with pytest.raises(CheckpointError) as error:
        CheckpointLoader.load_checkpoint(f'{base}/missing.pth')
    assert str(error.value).startswith(
        f'{base}/missing.pth: cannot be downloaded (HTTP Error 404')


def test_tools_train_with_a_crafted_url(crafted_url, hub, tmp_path):
    """As ``load_from`` and as a backbone's ``init_cfg`` checkpoint, each
    fetched and read by the pre-flight before anything is built: one line,
    rc 1, no traceback, nothing run."""
    url, canary = crafted_url
    env = dict(train_env(), TORCH_HOME=str(tmp_path / 'torch'))
    for options in ([f'load_from={url}'], [
            'model.backbone.init_cfg.type=Pretrained',
            f'model.backbone.init_cfg.checkpoint={url}']):
        work = tmp_path / f'work{len(options)}'
        command = train_command(work) + options
        done = subprocess.run(command, cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=600)
        assert done.returncode == 1, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert refused(last, url) and last.startswith('error: '), last
        assert 'Traceback' not in done.stderr + done.stdout
        assert not canary.exists()
        assert not list(work.rglob('*.pth'))


# -- --resume and the config text a checkpoint carries -----------------------


@pytest.fixture
def resume_with_config_text(mrcl_checkpoint, tmp_path):
    """A real checkpoint of the small config whose legacy ``meta['config']``
    is Python that creates a canary: pure data to any unpickler."""
    canary = tmp_path / 'ran'
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    ckpt['meta']['config'] = (f'gpu_ids = [0]\nopen({str(canary)!r}, '
                              "'w').close()\n")
    work = tmp_path / 'work'
    work.mkdir()
    torch.save(ckpt, work / 'iter_4.pth')
    (work / 'last_checkpoint').write_text(str(work / 'iter_4.pth'))
    return work, canary


def test_tools_train_refuses_config_code_in_a_checkpoint(
        resume_with_config_text, mrcl_data_env):
    work, canary = resume_with_config_text
    for resume in (['--resume', work / 'iter_4.pth'], ['--resume']):
        message = run_tool('train.py', train_command(work, *resume)[2:])
        assert message.startswith(
            f"error: resume {work}/iter_4.pth: its meta['config'] is Python "
            'code (line 2: open(') and message.endswith(
            'which a saved config never is; nothing in it was run')
    assert not canary.exists()


def _resumed_runner(work: Path, iters: int) -> Runner:
    cfg = Config.fromfile(str(SMALL_CIFAR))
    cfg.merge_from_dict({
        'work_dir': str(work), 'resume': True,
        'load_from': str(work / 'iter_4.pth'),
        'train_cfg.max_iters': iters, 'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'experiment_name': experiment_name('doors')})
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNHook']
    return Runner.from_cfg(cfg)


def test_mmengine_resume_reads_the_config_as_data(resume_with_config_text,
                                                  monkeypatch, mrcl_data_env):
    """mmengine's own Runner (no pre-flight: mmpretrain's tools/train.py,
    a notebook) resumes from the file, keeps its gpu_ids and runs nothing;
    without the fix the same resume ran the text."""
    work, canary = resume_with_config_text
    runner = _resumed_runner(work, 5)
    runner.train()
    assert runner.iter == 5 and not canary.exists()
    monkeypatch.setattr(Runner, 'load_checkpoint',
                        Runner.load_checkpoint.__wrapped__)
    _resumed_runner(work, 6).train()
    assert canary.exists()


def test_the_saved_config_keeps_only_gpu_ids():
    ckpt = {'meta': {'config': "gpu_ids = [0, 1]\nimport os\n"}}
    compat._saved_config_as_data(ckpt)
    assert ckpt['meta']['config'] == 'gpu_ids = [0, 1]'
    ckpt = {'meta': {'config': "gpu_ids = list(range(2))\n"}}
    compat._saved_config_as_data(ckpt)
    assert 'config' not in ckpt['meta']


# -- a file cannot change the reader's allow-list ---------------------------


REGISTRY_PROBE = '''
import sys, torch
from mmengine.logging import HistoryBuffer
{load}
after = HistoryBuffer._statistics_methods.get('mean')
print('kept' if after is HistoryBuffer.mean else f'replaced by {{after}}')
'''


def test_a_history_buffer_cannot_rewrite_the_statistics(tmp_path):
    """mmengine's HistoryBuffer.__setstate__ copies the file's
    statistics_methods into the class-wide registry. A file whose buffer
    names ``set`` for 'mean' (two globals torch allows) swapped it for the
    rest of the process; read as data it changes nothing and the buffer
    comes back whole."""
    path = tmp_path / 'registry.pth'
    history = pickle.dumps(np.array([1.5, 2.5]), protocol=2)[2:-1]
    counts = pickle.dumps(np.array([1, 1]), protocol=2)[2:-1]
    state = (b'}(' + text('max_length') + integer(10) +
             text('_log_history') + history + text('_count_history') +
             counts + text('statistics_methods') + b'}(' + text('mean') +
             glob('builtins.set') + b'uub')
    buffer = (glob('mmengine.logging.history_buffer.HistoryBuffer') +
              b')\x81' + state)  # NEWOBJ, then BUILD with the state
    write_torch_file(path, b'}(' + text('message_hub') + b'}(' +
                     text('loss') + buffer + b'uu')
    loads = {
        'ours': ('from mrcl_plugin.checkpoints import load_checkpoint_file;'
                 f'b = load_checkpoint_file({str(path)!r})["message_hub"]'
                 '["loss"]; assert b.mean() == 2.0, b.mean()'),
        'unsafe': (f'torch.load({str(path)!r}, weights_only=False)'),
    }
    seen = {}
    for name, load in loads.items():
        done = subprocess.run(
            [sys.executable, '-c', REGISTRY_PROBE.format(load=load)],
            capture_output=True, text=True, timeout=120, env=train_env())
        assert done.returncode == 0, done.stderr[-2000:]
        seen[name] = done.stdout.strip().splitlines()[-1]
    assert seen == {'ours': 'kept', 'unsafe': "replaced by <class 'set'>"}


def test_getattr_resolves_only_the_four_statistics(tmp_path):
    path = write_torch_file(
        tmp_path / 'getattr.pth', b'}(' + text('f') + call(
            'builtins.getattr', glob('numpy.ndarray'), text('tofile')) + b'u')
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_file(path)
    assert str(error.value) == (
        f"{path}: refused: it pickles getattr(ndarray, 'tofile'), which no "
        'checkpoint holds (nothing in it was run)')


# -- DeepSpeed folders -------------------------------------------------------


DS_CONFIG = (ROOT / 'configs' / 'mrcl' /
             'mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k_deepspeed.py')


def test_resume_reads_every_file_of_a_deepspeed_folder(tmp_path,
                                                      mrcl_data_env):
    """DeepSpeed's own loader unpickles whatever the folder holds: before
    it runs, each file is read as data, and a crafted one stops the run in
    one line. A folder with a config that trains without DeepSpeed is
    refused too (its optimizer state is DeepSpeed's)."""
    canary = tmp_path / 'ran'
    folder = tmp_path / 'work' / 'epoch_1.pth'
    shutil.copytree(ZERO_FIXTURE, folder)
    crafted = folder / 'bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt'
    canary_checkpoint(crafted, canary)
    message = run_tool('train.py', [DS_CONFIG, '--work-dir', tmp_path / 'w',
                                    '--resume', folder])
    assert refused(message, crafted) and message.startswith('error: ')
    message = run_tool('train.py', train_command(
        tmp_path / 'w2', '--resume', folder)[2:])
    assert message == (
        f'error: resume {folder}: a DeepSpeed checkpoint folder, and this '
        'config trains without DeepSpeed; use load_from to start from its '
        'weights')
    assert not canary.exists()


def test_latest_checkpoint_finds_a_deepspeed_folder(tmp_path):
    from mrcl_plugin.checkpoints import latest_checkpoint
    work = tmp_path / 'work'
    shutil.copytree(ZERO_FIXTURE, work / 'epoch_1.pth')
    (work / 'epoch_2.pth').mkdir()  # no DeepSpeed files: not a checkpoint
    assert latest_checkpoint(str(work)) == str(work / 'epoch_1.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    assert latest_checkpoint(str(work)) == str(work / 'epoch_1.pth')
    assert (work / 'epoch_1.pth' / MODEL_STATES).is_file()


# -- torch's bound and the atomic write's folder -----------------------------


def test_torch_without_the_weights_only_fix_is_refused(repo_root):
    """torch.load(weights_only=True) could run code before 2.6
    (CVE-2025-32434): pip is asked for torch>=2.6, and the plugin refuses
    an older one at import."""
    setup = (repo_root / 'setup.cfg').read_text()
    assert 'torch>=2.6' in setup
    compat.check_torch('2.6.0+cpu')
    with pytest.raises(ImportError, match='CVE-2025-32434'):
        compat.check_torch('2.5.1')


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    """A rename is an entry in the folder: until the folder is on disk, a
    power cut can lose it."""
    import os
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}')))
        real_fsync(fd)

    def replace(src, dst):
        events.append(('replace', str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    target = tmp_path / 'iter_1.pth'
    with atomic_path(target) as partial:
        Path(partial).write_bytes(b'whole')
    assert events == [('fsync', str(tmp_path / '.iter_1.pth.part')),
                      ('replace', str(target)), ('fsync', str(tmp_path))]
    assert target.read_bytes() == b'whole'


# -- data of the wrong shape: one line from every entry point ---------------

HB = 'mmengine.logging.history_buffer.HistoryBuffer'
STATE = b'}(' + text('a') + integer(1) + b'u'  # what BUILD sets
LOADING = {
    'bytearray': (call('builtins.bytearray', integer(10**30)),
                  'refused: it pickles builtins.bytearray, which no '
                  'checkpoint holds'),
    'oversized_ndarray': (
        call('numpy.core.multiarray._reconstruct', glob('numpy.ndarray'),
             tuple_of(integer(10**12)), call('_codecs.encode', text('b'),
                                             text('latin1'))),
        'not a checkpoint: it holds a numpy array rebuilt from other than '
        "numpy's"),
    'history_buffer_called': (
        call(HB, b']K\x01a', b']'),
        'refused: it pickles a call of HistoryBuffer(...) (a checkpoint '
        'restores one from its state)'),
    'build_on_a_set': (call('builtins.set', b']') + STATE + b'b',
                       "not a torch checkpoint: cannot be read as data "
                       "(AttributeError: 'set' object has no attribute"),
    'build_on_a_size': (call('torch.Size', b']') + STATE + b'b',
                        'not a torch checkpoint: cannot be read as data '
                        '(AttributeError:'),
}


@pytest.mark.parametrize('case', sorted(LOADING))
def test_data_that_is_no_checkpoint_is_one_line(tmp_path, case):
    ops, reason = LOADING[case]
    path = write_torch_file(tmp_path / f'{case}.pth',
                            b'}(' + text('meta') + ops + b'u')
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_file(path)
    assert str(error.value).startswith(f'{path}: {reason}'), str(error.value)
    assert '\n' not in str(error.value)


def zero_copy(tmp_path, name, change):
    folder = tmp_path / 'epoch_1.pth'
    shutil.copytree(ZERO_FIXTURE, folder)
    from mrcl_plugin.checkpoints.zero import STAND_INS
    ckpt = load_checkpoint_file(folder / name, stand_ins=STAND_INS)
    change(ckpt)
    torch.save(ckpt, folder / name)
    return folder


OPTIM = 'bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt'
ZERO = {
    'ds_config_a_list': (MODEL_STATES, lambda c: c.update(ds_config=[1]),
                         "'ds_config' is not a DeepSpeed config (a list)"),
    'no_module': (MODEL_STATES, lambda c: c.pop('module'),
                  "no 'module': not a DeepSpeed checkpoint file"),
    'world_size_text': (MODEL_STATES,
                        lambda c: c.update(dp_world_size='x'),
                        "'dp_world_size' is a str, not an int"),
    'module_not_tensors': (
        MODEL_STATES, lambda c: c['module'].update({'backbone.x': 'y'}),
        "'module' holds a str under 'backbone.x', not a tensor"),
    'no_optimizer_state': (OPTIM, lambda c: c.pop('optimizer_state_dict'),
                           "no 'optimizer_state_dict': not a DeepSpeed "
                           'checkpoint file'),
}


@pytest.mark.parametrize('case', sorted(ZERO))
def test_zero_folders_of_the_wrong_shape_are_one_line(tmp_path, case):
    from mrcl_plugin.checkpoints.converters import to_mmpretrain
    from mrcl_plugin.checkpoints.zero import check_zero_folder
    name, change, reason = ZERO[case]
    folder = zero_copy(tmp_path, name, change)
    for read in (check_zero_folder, to_mmpretrain):
        with pytest.raises(CheckpointError) as error:
            read(folder)
        assert str(error.value) == f'{folder / name}: {reason}'


def _mrcl(ckpt):
    return ckpt['meta']['mrcl']


PLAIN = {
    'meta_a_list': (lambda c: c.update(meta=[1]),
                    "'meta' is a list, not a dict"),
    'mixed_keys': (lambda c: c.update({3: torch.ones(1)}),
                   'the checkpoint has a key that is not a string: an int, '
                   '3'),
    'cfg_a_number': (lambda c: c['meta'].update(cfg=5),
                     "meta['cfg'] is an int, not the text of a config"),
    'tensor_as_type': (lambda c: _mrcl(c).update(type=torch.ones(3)),
                       "meta['mrcl'] 'type' is a Tensor, not a class name"),
    'no_encoder_keys': (
        lambda c: c.update(state_dict={
            k: v for k, v in c['state_dict'].items()
            if not k.startswith('backbone.')}),
        'not an MRCL checkpoint: no backbone.cls_token'),
    'int_state_dict_keys': (
        lambda c: c['state_dict'].update({0: torch.ones(1)}),
        "'state_dict' has a key that is not a string: an int, 0"),
    'learner_a_list': (lambda c: _mrcl(c).update(learner=['simclr']),
                       "meta['mrcl'] 'learner' is a list, not a learner "
                       'name'),
}


@pytest.mark.parametrize('case', sorted(PLAIN))
def test_checkpoints_of_the_wrong_shape_are_one_line(mrcl_checkpoint,
                                                     tmp_path, capsys, case):
    """Through the converters' command line, the kNN and dense tools'
    ``load_weights`` and results.py, which had each met one of these with a
    traceback."""
    from mrcl_plugin.checkpoints.converters import main as convert
    from mrcl_plugin.evaluation.models import load_weights
    sys.path.insert(0, str(ROOT / 'tools' / 'analysis_tools'))
    import results
    change, reason = PLAIN[case]
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    change(ckpt)
    path = tmp_path / f'{case}.pth'
    torch.save(ckpt, path)
    assert convert('mmpretrain', [str(path), str(tmp_path / 'o.pth')]) == 1
    assert capsys.readouterr().err == f'error: {path}: {reason}\n'
    assert not (tmp_path / 'o.pth').exists()
    if case != 'no_encoder_keys':  # a state dict the model can take
        model = torch.nn.Linear(1, 1)
        with pytest.raises(CheckpointError) as error:
            load_weights(model, str(path))
        assert str(error.value) == f'{path}: {reason}'
    assert results._encoder(str(path))[0] in (None, ('barlowtwins', True))


# -- mmengine's inferencers, given only weights ------------------------------


def test_an_inferencer_builds_from_the_saved_config_as_data(
        mrcl_checkpoint, tmp_path, monkeypatch):
    """mmseg's and mmdet's inferencers (mmengine's ``BaseInferencer``) with
    weights and no config built the model from the config text saved in
    the checkpoint through ``Config.fromstring``, which runs it. Now the
    text is read as data (a real one builds its model without
    ``fromstring``), and text that is code is refused in one line; without
    the fix that text ran."""
    from mmengine.config import ConfigDict
    from mmengine.infer import BaseInferencer
    from mmengine.registry import DefaultScope
    # an inferencer of no task: only its model building is used
    Inferencer = type('Inferencer', (BaseInferencer, ), dict(
        _init_pipeline=None, postprocess=None, visualize=None))
    inferencer = Inferencer.__new__(Inferencer)

    def no_fromstring(*args, **kwargs):
        raise AssertionError('Config.fromstring ran a saved config')

    monkeypatch.setattr(Config, 'fromstring', no_fromstring)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = inferencer._init_model(ConfigDict(), str(mrcl_checkpoint))
    assert type(model).__name__ == 'MRBarlowTwins'
    monkeypatch.undo()
    canary = tmp_path / 'ran'
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    ckpt['message_hub']['runtime_info']['cfg'] = \
        f"open({str(canary)!r}, 'w').close()"
    path = tmp_path / 'code.pth'
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match='saved config is Python code'):
        inferencer._init_model(ConfigDict(), str(path))
    assert not canary.exists()
    with pytest.raises(Exception):  # the text runs, then no model builds
        BaseInferencer._init_model.__wrapped__(inferencer, ConfigDict(),
                                               str(path))
    assert canary.exists()
