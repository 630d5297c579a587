"""``mim train`` runs the plugin's small config for 2 iterations, through
mmpretrain's train script and through the plugin's own (its ``.mim``
extension: mrcl_plugin/.mim/{configs,tools} link to configs/ and tools/)."""
import math
import os
import re
import subprocess
from pathlib import Path

from mrcl_testing import mim_finds


CONFIG_NAME = 'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'
SHRINK = [
    '--cfg-options',
    'train_cfg.max_iters=2',
    'train_dataloader.batch_size=8',
    'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'default_hooks.logger.interval=1',
]
ITER_LINE = re.compile(r'Iter\(train\) \[(\d+)/2\].*?\sloss: ([-+.\w]+)')


def mim_train(venv_bin, repo_root, data_root, work_dir, package, config):
    cmd = [str(venv_bin / 'mim'), 'train', package, config,
           '--work-dir', str(work_dir)] + SHRINK
    env = dict(os.environ, MRCL_DATA=str(data_root))
    proc = subprocess.run(
        cmd, cwd=repo_root, env=env, capture_output=True, text=True,
        timeout=300)
    log = proc.stdout + proc.stderr
    quiet = '\n'.join(line for line in log.splitlines()
                      if 'pkg_resources' not in line
                      and '_bootstrap._exec' not in line)
    assert proc.returncode == 0, quiet[-3000:]
    return log


def check_run(log, work_dir):
    assert 'Training finished successfully' in log
    iters = ITER_LINE.findall(log)
    assert [i for i, _ in iters] == ['1', '2'], log[-3000:]
    for _, loss in iters:
        assert math.isfinite(float(loss)) and float(loss) > 0
    assert 'Saving checkpoint at 2 iterations' in log
    assert (work_dir / 'iter_2.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith(
        'iter_2.pth')
    # The dumped config carries the command-line overrides.
    dumped = (work_dir / CONFIG_NAME).read_text()
    assert 'max_iters=2' in dumped.replace(' ', '')
    # The text log of the run holds the same iterations.
    logs = list(work_dir.glob('*/*.log'))
    assert len(logs) == 1
    assert len(ITER_LINE.findall(logs[0].read_text())) == 2


def test_mim_train_mmpretrain_runs_plugin_config(tmp_path, repo_root,
                                                 data_root, venv_bin):
    """mmpretrain's tools/train.py reads the plugin config; its
    custom_imports registers MRCL and applies mrcl_plugin.compat."""
    config = repo_root / 'configs' / 'mrcl' / CONFIG_NAME
    log = mim_train(venv_bin, repo_root, data_root, tmp_path, 'mmpretrain',
                    str(config))
    script = re.search(r'Training command is \S+ (\S+)', log).group(1)
    assert Path(script).parts[-4:] == ('mmpretrain', '.mim', 'tools',
                                       'train.py')
    check_run(log, tmp_path)


def test_mim_finds_plugin_train_script():
    """mim 0.3.9 runs ``<dist location>/<package>/.mim/tools/train.py``,
    where the dist location is the folder of the package's dist-info. A
    PEP 660 editable install (pip install -e) leaves only a dist-info and an
    import hook there, no ``mrcl_plugin`` folder, so mim runs a missing
    script ("... site-packages/mrcl_plugin/tools/train.py -h returned
    non-zero exit status 2"). setup.py's editable wheel puts stubs there
    that run this checkout's tools and inherit its configs (run from the
    checkout, whose mrcl_plugin.egg-info is then first on sys.path, mim
    finds the checkout's own mrcl_plugin/.mim links instead)."""
    from mim.utils import get_installed_path, module_full_name
    assert module_full_name('mrcl_plugin') == 'mrcl_plugin'
    pkg_root = Path(get_installed_path('mrcl_plugin'))
    train_script = pkg_root / '.mim' / 'tools' / 'train.py'
    assert train_script.is_file(), (
        f'mim looks for the train script at {train_script}, which does not '
        'exist (see this test\'s docstring)')
    root = Path(__file__).resolve().parents[1]
    config = pkg_root / '.mim' / 'configs' / 'mrcl' / CONFIG_NAME
    assert mim_finds(train_script, root / 'tools' / 'train.py')
    assert mim_finds(config, root / 'configs' / 'mrcl' / CONFIG_NAME)


def test_mim_train_mrcl_plugin_runs_plugin_config(tmp_path, repo_root,
                                                  data_root, venv_bin):
    """The plugin's own tools/train.py, and the config given by name only:
    mim finds it in mrcl_plugin/.mim/configs."""
    log = mim_train(venv_bin, repo_root, data_root, tmp_path, 'mrcl_plugin',
                    CONFIG_NAME)
    assert 'we find the config file in codebase mrcl_plugin' in log
    script = re.search(r'Training command is \S+ (\S+)', log).group(1)
    assert Path(script).parts[-4:] == ('mrcl_plugin', '.mim', 'tools',
                                       'train.py')
    check_run(log, tmp_path)
