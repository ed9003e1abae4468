"""Follow a channel label through a reshape (Reshape, Flatten, Squeeze, Unsqueeze).

Row-major reshapes keep element order, so a label's channels stay put when the product of
the dims *after* the label (its suffix product) is unchanged: that is how channels are
found again after ``[T*N, C, L] -> [T, N, H, D, L]``. Dims merged into the channel span
(flattening ``C x L`` into one axis) repeat each channel id over the merged positions.
"""

from __future__ import annotations

import numpy as np

from svtprune.graph.labels import Label

Dims = list[int | None]


def _suffix_products(dims: Dims) -> list[int | None]:
    out: list[int | None] = [1] * (len(dims) + 1)
    for i in range(len(dims) - 1, -1, -1):
        prev = out[i + 1]
        out[i] = None if prev is None or dims[i] is None else prev * dims[i]
    return out


def map_label(label: Label, in_dims: Dims, out_dims: Dims) -> tuple[Label | None, str]:
    """The label on the reshaped tensor, or None and the reason it cannot be followed."""
    a0, a1 = label.axes[0], label.axes[-1] + 1
    if label.axes != tuple(range(a0, a1)):
        return None, "channels spread over non-adjacent axes meet a reshape"
    s_in, s_out = _suffix_products(in_dims), _suffix_products(out_dims)
    start = _align(s_in, s_out, range(a0, -1, -1))
    end = _align(s_in, s_out, range(a1, len(in_dims) + 1))
    if start is None or end is None:
        return None, f"reshape {in_dims} -> {out_dims} mixes channels with dynamic dims"
    (i0, b0), (i1, b1) = start, end
    span = in_dims[i0:i1]
    if any(d is None for d in span) or b1 < b0:
        return None, f"reshape {in_dims} -> {out_dims} mixes channels with dynamic dims"
    view = [1] * (i1 - i0)
    for k, axis in enumerate(range(a0, a1)):
        view[axis - i0] = label.ids.shape[k]
    ids = np.broadcast_to(label.ids.reshape(view), span).reshape(out_dims[b0:b1])
    return Label(np.ascontiguousarray(ids), tuple(range(b0, b1))), ""


def _align(s_in: list[int | None], s_out: list[int | None], candidates: range) -> tuple[int, int] | None:
    """First input axis (walking away from the label) whose suffix product the output shares."""
    for i in candidates:
        if s_in[i] is None:
            return None
        for b, value in enumerate(s_out):
            if value == s_in[i]:
                # size-1 output axes stay outside the label: last match for its start, first for its end
                matches = [c for c in range(b, len(s_out)) if s_out[c] == value]
                return i, matches[-1] if candidates.step < 0 else matches[0]
    return None
