"""A derived channel group that does not fit the model's modules is kept whole with the reason,
never handed to training (GhostNet's gated concatenation: the squeeze-excitation expand conv
writes both halves of the concatenation, twice the group's channels)."""

from __future__ import annotations

import pytest

from tests import own_models
from tests.derived_groups import derive_cached
from train.chase import Chase
from train.config import ChaseConfig
from train.group_fit import fitted

SHAPE = (3, 16, 16)
CFG = ChaseConfig(channel_sparsity=0.4, update_every=2, channel_every=2)
MISFIT = "blocks.1.ghost1.primary_conv.0"


def test_a_misfit_group_is_kept_whole_with_the_reason() -> None:
    net = own_models.ghostnet(num_classes=4)
    found = derive_cached(net, SHAPE)
    with pytest.raises(ValueError, match="producer 'blocks.1.se.fc2' has 32 channels"):
        Chase(net, found, CFG, steps_per_epoch=4, epochs=2)
    kept = fitted(net, found, False, SHAPE)
    assert [g.name for g in kept] == [g.name for g in found if g.name != MISFIT]
    reason = (
        "the channel group derived for it does not fit the model (producer 'blocks.1.se.fc2' "
        "has 32 channels where the group's map needs 16); kept whole"
    )
    for layer in (MISFIT, "blocks.1.se.fc2", "blocks.1.ghost1.cheap_operation.0"):
        assert kept.excluded[layer] == reason
    assert set(found.excluded).issubset(kept.excluded)
    assert kept.input_shape == SHAPE and kept.prune_skip is False
    chase = Chase(net, kept, CFG, steps_per_epoch=4, epochs=2)
    assert chase.channels_total == sum(g.width for g in kept)


def test_groups_that_fit_pass_unchanged() -> None:
    net = own_models.densenet(num_classes=4)
    found = derive_cached(net, SHAPE)
    assert fitted(net, found, False, SHAPE) == found
