"""A channel group that does not fit the model's modules is kept whole with the reason, never
handed to training; the analysis applies the check itself, so ``derive_groups`` never returns
such a group. (GhostNet's gated concatenation once gave one: the squeeze-excitation expand conv
writes both halves of the concatenation, twice the group's channels, and the analysis listed
it as a plain producer. It is now derived with its map, and fits.)"""

from __future__ import annotations

import dataclasses

import pytest

from chase_deploy.graph import analysis
from tests import own_models
from tests.derived_groups import derive_cached
from train.chase import Chase
from train.config import ChaseConfig
from train.group_fit import fitted
from train.groups import PLAIN, ChannelGroup, ChannelMap

SHAPE = (3, 16, 16)
CFG = ChaseConfig(channel_sparsity=0.4, update_every=2, channel_every=2)
GHOST = "blocks.1.ghost1.primary_conv.0"
GATE = "blocks.1.se.fc2"
REASON = (
    "the channel group derived for it does not fit the model (producer 'blocks.1.se.fc2' "
    "has 32 channels where the group's map needs 16); kept whole"
)


def plain_gate(group: ChannelGroup) -> ChannelGroup:
    """The group as the analysis once derived it: the gate a plain producer."""
    members = tuple(
        dataclasses.replace(m, map=PLAIN) if m.name == GATE else m for m in group.members
    )
    return dataclasses.replace(group, members=members)


def test_the_ghost_group_fits_with_its_gate_writing_both_halves() -> None:
    net = own_models.ghostnet(num_classes=4)
    found = derive_cached(net, SHAPE)
    group = next(g for g in found if g.name == GHOST)
    assert group.producers == (GHOST, GATE) and group.width == 16
    assert dict((m.name, m.map) for m in group.role("producer"))[GATE] == ChannelMap(outer=2)
    assert fitted(net, found, False, SHAPE) == found
    chase = Chase(net, found, CFG, steps_per_epoch=4, epochs=2)
    assert chase.channels_total == sum(g.width for g in found)


def test_a_misfit_group_is_kept_whole_with_the_reason() -> None:
    net = own_models.ghostnet(num_classes=4)
    found = derive_cached(net, SHAPE)
    wrong = dataclasses.replace(
        found, groups=tuple(plain_gate(g) if g.name == GHOST else g for g in found)
    )
    with pytest.raises(ValueError, match="producer 'blocks.1.se.fc2' has 32 channels"):
        Chase(net, wrong, CFG, steps_per_epoch=4, epochs=2)
    kept = fitted(net, wrong, False, SHAPE)
    assert [g.name for g in kept] == [g.name for g in found if g.name != GHOST]
    for layer in (GHOST, GATE, "blocks.1.ghost1.cheap_operation.0"):
        assert kept.excluded[layer] == REASON
    assert set(found.excluded).issubset(kept.excluded)
    assert kept.input_shape == SHAPE and kept.prune_skip is False
    chase = Chase(net, kept, CFG, steps_per_epoch=4, epochs=2)
    assert chase.channels_total == sum(g.width for g in kept)


def test_the_analysis_keeps_a_misfit_whole_itself(monkeypatch) -> None:
    """Whatever a rule gets wrong, ``derive_groups`` checks every group against the modules."""
    derive = analysis.ChannelAnalysis._group

    def wrong(self, root, found, stream):
        group = derive(self, root, found, stream)
        return plain_gate(group) if group.name == GHOST else group

    monkeypatch.setattr(analysis.ChannelAnalysis, "_group", wrong)
    net = own_models.ghostnet(num_classes=4)
    groups = analysis.derive_groups(net, SHAPE)
    assert GHOST not in [g.name for g in groups]
    assert groups.excluded[GATE] == REASON


def test_groups_that_fit_pass_unchanged() -> None:
    net = own_models.densenet(num_classes=4)
    found = derive_cached(net, SHAPE)
    assert fitted(net, found, False, SHAPE) == found
