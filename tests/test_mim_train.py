"""Where mim looks for the plugin's train script and configs. (mim runs
them in tests/test_config_matrix.py and tests/test_install.py.)"""
from pathlib import Path

from mrcl_testing import mim_finds


CONFIG_NAME = 'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'


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
