"""Per-layer view of a model before and after slimming (the paper's Table 15 layout).

One row per Conv/ConvTranspose/Gemm/MatMul layer: shapes, kept channels, parameter and channel
sparsity, FLOPs, with totals; ``slim_report.json`` and ``inspect`` print the same rows. Without a
slim model, the "after" side is what the layer's zero rows and columns would allow.
"""

from __future__ import annotations

from typing import Any

import onnx

from chase_deploy.graph.flops import LayerCost, layer_costs, total_params
from train.plan import ChannelPlan


def layer_table(
    dense: onnx.ModelProto, slim: onnx.ModelProto | None = None, plan: ChannelPlan | None = None
) -> list[dict[str, Any]]:
    """One row per Conv/ConvTranspose/Gemm/MatMul layer of ``dense``, matched to ``slim`` by
    ONNX node name (the surgery never renames nodes)."""
    after = {c.node: c for c in layer_costs(slim)} if slim is not None else {}
    rows = []
    for before in layer_costs(dense):
        cut = after.get(before.node)
        rows.append(_row(before, cut, plan))
    return rows


def _row(before: LayerCost, cut: LayerCost | None, plan: ChannelPlan | None) -> dict[str, Any]:
    if cut is not None:
        out_after, in_after = cut.out_channels, cut.in_channels
        shape_after, flops_after, params_after = cut.weight_shape, cut.flops, cut.params
    else:  # no slim model: what the zero rows/columns allow
        out_after, in_after = before.alive_out, before.alive_in
        scale = (out_after / before.out_channels) * (in_after / before.in_channels)
        shape_after = _shrunk(before, out_after, in_after)
        flops_after = int(round(before.flops * scale))
        params_after = int(round(before.params * scale))
    entry = plan.layers.get(before.name) if plan is not None else None
    weights = max(1, _weight_elems(before))
    return {
        "name": before.name,
        "node": before.node,
        "op": before.op,
        "shape_before": before.weight_shape,
        "shape_after": shape_after,
        "out_before": before.out_channels,
        "out_after": out_after,
        "in_before": before.in_channels,
        "in_after": in_after,
        "kept": list(entry.kept) if entry is not None else None,
        "params_before": before.params,
        "params_after": params_after,
        "param_sparsity": round(1.0 - before.nonzero / weights, 6),
        "channel_sparsity": round(1.0 - out_after / before.out_channels, 6),
        "flops_before": before.flops,
        "flops_after": flops_after,
        "sparse_flops": before.sparse_flops,
    }


def _weight_elems(cost: LayerCost) -> int:
    n = 1
    for d in cost.weight_shape:
        n *= d
    return n


def _shrunk(cost: LayerCost, out_after: int, in_after: int) -> list[int]:
    shape = list(cost.weight_shape)
    shape[cost.out_axis] = out_after
    if cost.group == 1:  # a grouped weight's input dim is per group: left as is
        shape[cost.in_axis] = in_after
    return shape


def summary(
    dense: onnx.ModelProto, slim: onnx.ModelProto | None, rows: list[dict]
) -> dict[str, Any]:
    """Totals: parameters and FLOPs before/after, sparse FLOPs."""
    return {
        "params": {
            "dense": total_params(dense),
            "slim": total_params(slim) if slim is not None else None,
        },
        "flops": {
            "dense": sum(r["flops_before"] for r in rows),
            "slim": sum(r["flops_after"] for r in rows),
            "sparse": sum(r["sparse_flops"] for r in rows),
        },
    }


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width text table with totals, for the terminal."""
    header = (
        "layer",
        "shape before",
        "shape after",
        "kept",
        "param sp.",
        "chan sp.",
        "MFLOPs",
        "MFLOPs after",
    )
    lines = [header]
    for r in report["layers"]:
        lines.append(
            (
                r["name"],
                "x".join(map(str, r["shape_before"])),
                "x".join(map(str, r["shape_after"])),
                f"{r['out_after']}/{r['out_before']}",
                f"{r['param_sparsity']:.1%}",
                f"{r['channel_sparsity']:.1%}",
                f"{r['flops_before'] / 1e6:.2f}",
                f"{r['flops_after'] / 1e6:.2f}",
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    flops, params = report["flops"], report["params"]
    ratio = flops["dense"] / flops["slim"] if flops["slim"] else float("nan")
    text.append(
        f"FLOPs: dense {flops['dense'] / 1e9:.3f} G, slim {flops['slim'] / 1e9:.3f} G "
        f"({ratio:.2f}x), sparse {flops['sparse'] / 1e9:.3f} G; params: dense {params['dense']:,}"
        + (f", slim {params['slim']:,}" if params.get("slim") is not None else "")
    )
    return "\n".join(text)
