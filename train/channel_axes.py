"""Where a group member's channels live in PyTorch tensors: the PyTorch twin of ONNX's
``weight_axes``.

Conv weights are [out, in/groups, k...], ConvTranspose weights [in, out/groups, k...], Linear
weights [out, in].
"""

from __future__ import annotations

from torch import nn

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
