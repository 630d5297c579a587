import numpy as np
import pytest
import torch
from mmengine.runner import set_random_seed

from mrcl_plugin.models.utils import (BlockMaskGenerator, GridMaskGenerator,
                                      RandomMaskGenerator, num_masked)
from mrcl_testing import backbone_cfg, build, two_views

GENERATORS = [RandomMaskGenerator(), BlockMaskGenerator(), GridMaskGenerator()]
IDS = ['random', 'block', 'grid']


@pytest.mark.parametrize('gen', GENERATORS, ids=IDS)
@pytest.mark.parametrize('grid', [(8, 8), (14, 14), (6, 10)])
@pytest.mark.parametrize('ratio', [0.0, 0.1, 0.2, 0.5, 0.75])
def test_exact_masked_count(gen, grid, ratio):
    n = grid[0] * grid[1]
    mask = gen(16, grid, ratio, 'cpu')
    assert mask.shape == (16, n) and mask.dtype == torch.bool
    # MAE keeps exactly int(N * (1 - r)) tokens
    assert (mask.sum(1) == n - int(n * (1 - ratio))).all()


def test_num_masked_matches_mae():
    assert num_masked(196, 0.75) == 147
    assert num_masked(196, 0.2) == 40  # 156 visible
    assert num_masked(64, 0.0) == 0


@pytest.mark.parametrize('gen', GENERATORS, ids=IDS)
def test_masks_differ_across_the_batch(gen):
    mask = gen(32, (14, 14), 0.2, 'cpu')
    assert len({tuple(m.tolist()) for m in mask}) > 16


@pytest.mark.parametrize('gen', GENERATORS, ids=IDS)
def test_reproducible_under_a_seed(gen):
    set_random_seed(7)
    first = gen(8, (14, 14), 0.3, 'cpu')
    set_random_seed(7)
    again = gen(8, (14, 14), 0.3, 'cpu')
    set_random_seed(8)
    other = gen(8, (14, 14), 0.3, 'cpu')
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def masked_neighbour_fraction(mask: torch.Tensor, grid) -> float:
    """Share of masked patches with a masked 4-neighbour."""
    m = mask.view(-1, *grid).float()
    pad = torch.nn.functional.pad(m, (1, 1, 1, 1))
    neighbours = (pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] +
                  pad[:, 1:-1, 2:])
    return ((neighbours > 0) & (m > 0)).sum().item() / m.sum().item()


def test_block_masks_are_blocks():
    set_random_seed(0)
    block = BlockMaskGenerator()(64, (14, 14), 0.3, 'cpu')
    random = RandomMaskGenerator()(64, (14, 14), 0.3, 'cpu')
    # BEiT's rectangles of >= 4 patches: nearly every masked patch touches
    # another one; at r=0.3 random sampling leaves about half isolated.
    assert masked_neighbour_fraction(block, (14, 14)) > 0.95
    assert masked_neighbour_fraction(random, (14, 14)) < 0.8


def test_grid_masks_are_evenly_spaced():
    set_random_seed(0)
    mask = GridMaskGenerator()(16, (14, 14), 0.25, 'cpu')
    for row in mask:
        idx = row.nonzero().flatten()
        # r=0.25 masks every 4th patch in raster order
        assert (idx.diff() == 4).all()
    mask = GridMaskGenerator()(16, (14, 14), 0.3, 'cpu')
    for row in mask:
        gaps = row.nonzero().flatten().diff()
        step = 196 / 58
        assert set(gaps.tolist()) <= {int(np.floor(step)), int(np.ceil(step))}
    # phases differ between images
    assert len({tuple(m.tolist()) for m in mask}) > 1


@pytest.mark.parametrize('gen', ['RandomMaskGenerator', 'BlockMaskGenerator',
                                 'GridMaskGenerator'])
def test_each_view_gets_its_own_mask(gen):
    """MRCLViT masks each image of the stacked views separately; the visible
    tokens it encodes are exactly the unmasked ones."""
    backbone = build(backbone_cfg(0.25, mask_generator=dict(type=gen)))
    v1, v2 = two_views(8)
    latent, mask, ids_restore = backbone(torch.cat([v1, v2]))
    assert latent.shape == (16, 1 + 48, 64)
    assert (mask.sum(1) == 16).all()
    assert not torch.equal(mask[:8], mask[8:])
    # ids_restore undoes [visible, masked] ordering
    order = torch.argsort(ids_restore, dim=1)
    assert (mask.gather(1, order[:, :48]) == 0).all()
    assert (mask.gather(1, order[:, 48:]) == 1).all()


def test_given_mask_is_reused():
    backbone = build(backbone_cfg(0.25))
    x = torch.cat(two_views(4))
    _, mask, _ = backbone(x)
    latent_a, mask_a, _ = backbone(x, mask=mask.bool())
    latent_b, mask_b, _ = backbone(x, mask=mask.bool())
    assert torch.equal(mask_a, mask)
    torch.testing.assert_close(latent_a, latent_b)
