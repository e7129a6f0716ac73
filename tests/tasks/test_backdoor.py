"""BadNets and Blended poisoning: trigger placement, labels, seeding, ASR set."""

from __future__ import annotations

import pytest
import torch

from bastionfl.tasks.backdoor import (
    badnets_trigger,
    blended_trigger,
    build_asr_set,
    make_trigger,
    poison_dataset,
)

GRID = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_badnets_grid_in_bottom_right_corner_only(shape: tuple[int, int, int]) -> None:
    c, h, w = shape
    x = torch.full((4, c, h, w), 0.5)
    out = badnets_trigger(shape).apply(x)
    for ch in range(c):
        assert torch.equal(out[0, ch, h - 3 :, w - 3 :], GRID)
    untouched = torch.ones(h, w, dtype=torch.bool)
    untouched[h - 3 :, w - 3 :] = False
    assert torch.all(out[:, :, untouched] == 0.5)
    assert torch.all(x == 0.5), "input must not be modified"


def test_blended_is_fixed_by_seed_and_blends_at_alpha() -> None:
    shape = (1, 28, 28)
    a, b, c = blended_trigger(shape, seed=3), blended_trigger(shape, seed=3), blended_trigger(shape, seed=4)
    assert torch.equal(a.pattern, b.pattern) and not torch.equal(a.pattern, c.pattern)
    x = torch.rand(5, *shape)
    assert torch.allclose(a.apply(x), 0.8 * x + 0.2 * a.pattern)
    assert torch.allclose(blended_trigger(shape, alpha=0.5).apply(x), 0.5 * x + 0.5 * blended_trigger(shape).pattern)


def test_poison_dataset_rate_labels_mask_and_seed() -> None:
    x = torch.rand(200, 1, 8, 8)
    y = torch.randint(0, 10, (200,))
    trig = make_trigger("badnets", (1, 8, 8))
    px, py, mask = poison_dataset(x, y, trig, rate=0.1, target=3, seed=7)
    assert mask.dtype == torch.bool and int(mask.sum()) == 20
    assert torch.all(py[mask] == 3) and torch.equal(py[~mask], y[~mask])
    assert torch.equal(px[~mask], x[~mask]) and torch.equal(px[mask], trig.apply(x[mask]))
    _, _, mask2 = poison_dataset(x, y, trig, rate=0.1, target=3, seed=7)
    _, _, mask3 = poison_dataset(x, y, trig, rate=0.1, target=3, seed=8)
    assert torch.equal(mask, mask2) and not torch.equal(mask, mask3)


def test_asr_set_drops_target_class_and_relabels() -> None:
    x = torch.rand(50, 1, 28, 28)
    y = torch.arange(50) % 10
    trig = make_trigger("blended", (1, 28, 28), seed=1)
    ax, ay = build_asr_set(x, y, trig, target=2)
    assert ax.shape[0] == 45 and torch.all(ay == 2)
    assert torch.allclose(ax, trig.apply(x[y != 2]))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        make_trigger("wanet", (1, 8, 8))
    with pytest.raises(ValueError):
        badnets_trigger((1, 2, 2))
    with pytest.raises(ValueError):
        badnets_trigger((1, 8, 8)).apply(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError):
        poison_dataset(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), badnets_trigger((1, 8, 8)),
                       rate=1.5, target=0, seed=0)
