"""mmengine's checkpoint schemes, each ending in the weights-only reader.

Every checkpoint mmengine loads (``load_from``, ``resume``, ``init_cfg``'s
``Pretrained``, ``CheckpointLoader.load_checkpoint``) goes through the
loader registered for its prefix in ``CheckpointLoader``. mmengine's own
loaders unpickle everything: the local one with torch's default (which
torch>=2.6 makes weights-only, refusing mmengine's own checkpoints), the
http one through ``torch.hub.load_state_dict_from_url`` (not weights-only),
and ``open-mmlab://``, ``openmmlab://``, ``mmcls://``, ``torchvision://``
and ``modelzoo://`` end in that http loader; ``s3://``/``petrel://`` and
``pavi://`` have loaders of their own. :func:`register_schemes` replaces
each: the name tables and downloads are mmengine's and torch hub's (the
same cache), and the bytes are read by
:func:`mrcl_plugin.checkpoints.reader.read_checkpoint`.
"""
import os
import os.path as osp
from tempfile import TemporaryDirectory
from typing import Any, Dict
from urllib.parse import urlparse

import torch

from .reader import CheckpointError, load_checkpoint_file, read_checkpoint
from .zero import is_zero_checkpoint, load_zero_checkpoint


def load_from_local(filename: str, map_location=None) -> Dict[str, Any]:
    """A local file; a DeepSpeed ZeRO folder gives its fp32 weights."""
    filename = osp.expanduser(filename)
    if is_zero_checkpoint(filename):
        return load_zero_checkpoint(filename)
    if not osp.exists(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_file(filename, map_location=map_location)


def download(url: str, model_dir: str = None) -> str:
    """The file at ``url`` in torch hub's cache (``<hub>/checkpoints``, as
    ``torch.hub.load_state_dict_from_url`` keeps it), downloaded once. In a
    distributed run rank 0 downloads first, as mmengine's loader does."""
    from mmengine.dist import get_dist_info
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    name = osp.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(url, 'names no file')
    cached = osp.join(model_dir, name)
    rank, world_size = get_dist_info()
    for turn in ((0, ) if world_size == 1 else (0, 1)):
        if (rank == 0) == (turn == 0) and not osp.exists(cached):
            os.makedirs(model_dir, exist_ok=True)
            try:
                torch.hub.download_url_to_file(url, cached, progress=False)
            except (OSError, ValueError) as e:  # URLError is an OSError
                raise CheckpointError(
                    url, f'cannot be downloaded ({e})') from None
        if world_size > 1 and turn == 0:
            torch.distributed.barrier()
    return cached


def load_from_http(filename: str, map_location=None,
                   model_dir: str = None) -> Dict[str, Any]:
    """``http://`` and ``https://``: downloaded to torch hub's cache, then
    read as data; messages name the URL."""
    return read_checkpoint(download(filename, model_dir), filename,
                           map_location)


def _named_url(filename: str, prefix: str, urls: Dict[str, str]) -> str:
    name = filename[len(prefix):]
    if name not in urls:
        raise CheckpointError(filename, f'{prefix} knows no model {name!r}')
    return urls[name]


def load_from_torchvision(filename: str, map_location=None):
    """``torchvision://NAME`` (``modelzoo://``, deprecated): torchvision's
    URL of NAME."""
    from mmengine.runner.checkpoint import get_torchvision_models
    prefix = 'modelzoo://' if filename.startswith('modelzoo://') \
        else 'torchvision://'
    return load_from_http(
        _named_url(filename, prefix, get_torchvision_models()), map_location)


def load_from_openmmlab(filename: str, map_location=None):
    """``open-mmlab://NAME`` (or ``openmmlab://``): mmengine's table of
    OpenMMLab models, an URL or a file under mmengine's home."""
    from mmengine.runner.checkpoint import (_get_mmengine_home,
                                            get_deprecated_model_names,
                                            get_external_models)
    prefix = 'open-mmlab://' if filename.startswith('open-mmlab://') \
        else 'openmmlab://'
    name = filename[len(prefix):]
    name = get_deprecated_model_names().get(name, name)
    url = _named_url(prefix + name, prefix, get_external_models())
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    return load_checkpoint_file(osp.join(_get_mmengine_home(), url),
                                map_location)


def load_from_mmcls(filename: str, map_location=None):
    """``mmcls://NAME``: mmcls's model zoo, keys renamed as mmengine does."""
    from mmengine.runner.checkpoint import (_process_mmcls_checkpoint,
                                            get_mmcls_models)
    url = _named_url(filename, 'mmcls://', get_mmcls_models())
    checkpoint = load_from_http(url, map_location)
    if 'state_dict' not in checkpoint:
        raise CheckpointError(filename, "no 'state_dict'")
    return _process_mmcls_checkpoint(checkpoint)


def load_from_ceph(filename: str, map_location=None, backend='petrel'):
    """``s3://`` and ``petrel://`` (optionally ``name:s3://``): the bytes
    from mmengine's file backend, read in memory."""
    from mmengine.fileio import get_file_backend
    try:
        data = get_file_backend(
            filename, backend_args={'backend': backend}).get(filename)
    except ImportError as e:
        raise CheckpointError(filename, f'{backend} cannot be read here: '
                              f'{e}') from None
    return read_checkpoint(bytes(data), filename, map_location)


def load_from_pavi(filename: str, map_location=None):
    """``pavi://``: downloaded by pavi's model cloud to a temporary folder,
    then read; messages name the pavi path."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise CheckpointError(filename, 'pavi is not installed (it loads '
                              'pavi:// checkpoints)') from None
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp:
        path = osp.join(tmp, osp.basename(str(model.name)) or 'checkpoint')
        model.download(path)
        return read_checkpoint(path, filename, map_location)


# prefix (mmengine's, regular expressions) -> our loader
LOADERS = {
    '': load_from_local,
    'http://': load_from_http,
    'https://': load_from_http,
    'torchvision://': load_from_torchvision,
    'modelzoo://': load_from_torchvision,
    'open-mmlab://': load_from_openmmlab,
    'openmmlab://': load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    r'(\S+\:)?s3://': load_from_ceph,
    r'(\S+\:)?petrel://': load_from_ceph,
    'pavi://': load_from_pavi,
}


def register_schemes() -> None:
    """Register :data:`LOADERS` in mmengine's ``CheckpointLoader``, over
    its own loaders."""
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix, loader in LOADERS.items():
        CheckpointLoader.register_scheme(prefix, loader, force=True)


def load_checkpoint(source: str, map_location='cpu') -> Dict[str, Any]:
    """A checkpoint from a path, a ZeRO folder or any URL mmengine knows,
    through the loader registered for its scheme (no log line).

    Raises:
        CheckpointError: it is missing or not data.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    source = str(source)
    try:
        return CheckpointLoader._get_checkpoint_loader(source)(source,
                                                                map_location)
    except FileNotFoundError:
        raise CheckpointError(source, 'no such file') from None
