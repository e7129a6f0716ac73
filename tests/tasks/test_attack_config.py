"""Attack settings as configuration: trigger variants, all-to-all, start round, boosted model replacement."""

from __future__ import annotations

import pytest
import torch

from bastionfl.client.training import boost_update
from bastionfl.config import ConfigError, RunConfig
from bastionfl.tasks.backdoor import build_asr_set, make_trigger, poison_dataset


def test_patch_size_type_and_fixed_position() -> None:
    x = torch.full((2, 1, 10, 10), 0.5)
    out = make_trigger("badnets", (1, 10, 10), trigger_type="square", size=4, position="top-left").apply(x)
    assert torch.all(out[:, :, :4, :4] == 1.0)
    rest = torch.ones(10, 10, dtype=torch.bool)
    rest[:4, :4] = False
    assert torch.all(out[:, :, rest] == 0.5)


def test_random_position_moves_the_patch_per_image_and_is_seeded() -> None:
    x = torch.zeros(40, 1, 12, 12)
    trig = make_trigger("badnets", (1, 12, 12), trigger_type="square", size=3, position="random")
    a = trig.apply(x, torch.Generator().manual_seed(1))
    b = trig.apply(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.all(a.sum(dim=(1, 2, 3)) == 9.0), "every image carries the whole 3x3 patch"
    corners = {tuple(torch.nonzero(img[0])[0].tolist()) for img in a}
    assert len(corners) > 10, "the patch sits at many places"


def test_blend_alpha_reaches_the_trigger() -> None:
    trig = make_trigger("blended", (1, 8, 8), alpha=0.5, seed=2)
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(trig.apply(x), 0.5 * x + 0.5 * trig.pattern)


def test_all_to_all_relabels_to_the_next_class() -> None:
    x = torch.rand(100, 1, 8, 8)
    y = torch.arange(100) % 10
    trig = make_trigger("badnets", (1, 8, 8))
    _, py, mask = poison_dataset(x, y, trig, rate=0.3, target=0, seed=0, mode="all-to-all", num_classes=10)
    assert torch.equal(py[mask], (y[mask] + 1) % 10)
    ax, ay = build_asr_set(x, y, trig, target=0, mode="all-to-all", num_classes=10)
    assert ax.shape[0] == 100 and torch.equal(ay, (y + 1) % 10)


def test_boost_scales_weights_and_bn_statistics_not_counters() -> None:
    g = {"w": torch.ones(3), "bn.running_var": torch.ones(3), "bn.num_batches_tracked": torch.tensor(7)}
    local = {"w": torch.full((3,), 2.0), "bn.running_var": torch.full((3,), 1.5), "bn.num_batches_tracked": torch.tensor(9)}
    out = boost_update(local, g, 5.0)
    assert torch.allclose(out["w"], torch.full((3,), 6.0))
    assert torch.allclose(out["bn.running_var"], torch.full((3,), 3.5))  # 1 + 5 * 0.5: the statistics follow
    assert int(out["bn.num_batches_tracked"]) == 9
    assert torch.equal(local["w"], torch.full((3,), 2.0))  # the trained state is not modified in place


@pytest.mark.parametrize(("settings", "key"), [
    ({"attack": "badnets", "num_clients": 5, "poisoned_clients": 6}, "poisoned_clients"),
    ({"attack": "badnets", "attack_start_round": 0}, "attack_start_round"),
    ({"dataset": "sst2", "attack": "badnets", "trigger_size": 4}, "trigger_size"),
    ({"attack": "blended", "blend_alpha": 0.0}, "blend_alpha"),
])
def test_bad_attack_settings_are_one_line_errors(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.build(**settings)
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


def test_image_task_uses_the_configured_trigger() -> None:
    from bastionfl.tasks.registry import build_task

    task = build_task(RunConfig.build(attack="badnets", trigger_type="square", trigger_size=2,
                                      trigger_position="top-left", poisoned_clients=1))
    trig = task.trigger()
    assert torch.all(trig.alpha_map[:, :2, :2] == 1.0) and float(trig.alpha_map.sum()) == 4.0
