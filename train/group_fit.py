"""Every channel group checked against the model's modules before training uses it.

The groups come from a graph analysis (``chase_deploy.graph.analysis``), which can be wrong for
a pattern it does not know (a Ghost module's gated concatenation once gave a group whose
squeeze-excitation producer had twice the group's channels). A group whose members do not fit
the model (a member that is no Conv/Linear, a channel map of another length than the member's
axis) would fail in the middle of training; here it is kept whole instead, its layers listed
with the reason, as for any other layer the analysis cannot prune.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from train.channel_layout import ChannelLayout
from train.groups import ChannelGroup, ModelGroups


def fitting_groups(
    model: nn.Module, groups: Sequence[ChannelGroup], excluded: dict[str, str]
) -> list[ChannelGroup]:
    """The groups that fit ``model``; the producers (and depthwise carriers) of one that does
    not are added to ``excluded`` with the reason."""
    modules = dict(model.named_modules())
    kept = []
    for group in groups:
        try:
            ChannelLayout(modules, [group])
        except ValueError as e:
            why = str(e).removeprefix(f"channel group {group.name!r}: ")
            reason = f"the channel group derived for it does not fit the model ({why}); kept whole"
            layers = [*group.producers, *(m.name for m in group.carriers if m.kind == "depthwise")]
            for name in layers:
                excluded.setdefault(name, reason)
            continue
        kept.append(group)
    return kept


def fitted(
    model: nn.Module,
    found: Sequence[ChannelGroup],
    prune_skip: bool,
    input_shape: Sequence[int],
) -> ModelGroups:
    """``found`` (a ``ModelGroups`` or a plain list of groups) as the ``ModelGroups`` training
    uses: the groups that fit ``model``, the others' layers excluded with the reason."""
    excluded = dict(getattr(found, "excluded", {}))
    groups = fitting_groups(model, list(found), excluded)
    return ModelGroups(tuple(groups), excluded, prune_skip, tuple(int(d) for d in input_shape))
