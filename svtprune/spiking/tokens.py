"""Leave tokens out of a spiking transformer's blocks: a Gather after the stem, and N respelled as N'.

Training-free token pruning as a graph rewrite that stock ONNX Runtime runs: the stem still sees
the whole image, then only the kept tokens go through the blocks. Where the blocks sum over tokens
(the spiking attention's products, the final mean) they sum over the kept ones; everything else works
token by token (``token_flow``), so each kept token is computed as the same function of the kept
tokens as before. It is an approximation, not an exact rewrite: which tokens to keep is measured on
the user's images (``jobs/token_step.py``), and the accuracy it costs is measured like any cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from svtprune.errors import UserError
from svtprune.graph.analysis import constants_of
from svtprune.spiking.graph_edits import Constants, by_key, copy_of, rename_inputs, sort_nodes
from svtprune.spiking.tensor_shapes import probe_batch, tensor_shapes
from svtprune.spiking.time_tags import NotFollowable, key
from svtprune.spiking.token_flow import TokenFollower, TokenSites

MERGES = {"Reshape", "Flatten"}


@dataclass
class TokenAxis:
    """The node that flattens the grid (``merge``, by its first output), the grid and where N lives."""

    merge: str
    grid: tuple[int, int]
    axis: int  # the token axis of the merge's output
    sites: TokenSites

    @property
    def count(self) -> int:
        return self.grid[0] * self.grid[1]

    def line(self) -> str:
        h, w = self.grid
        return f"{self.count} tokens ({h} x {w}) after {self.merge}; summed in {len(self.sites.sums)} places"


def find_token_axis(model: onnx.ModelProto) -> TokenAxis | str:
    """The first grid flattening that the blocks follow token by token to the output, or why there is none."""
    if not any(node.op_type in MERGES for node in model.graph.node):
        return "no reshape flattens an image grid into tokens"
    try:
        shapes = tensor_shapes(model, probe_batch(model, avoid=0))
    except UserError as exc:  # a graph ONNX Runtime cannot run: nothing to follow (analyze reports it elsewhere)
        return f"the tensors' shapes could not be measured ({exc})"
    consts = constants_of(model)
    reasons = []
    for node in model.graph.node:
        grid = _merged_grid(node, shapes)
        if grid is None:
            continue
        try:
            sites = TokenFollower(model, shapes, consts).run(node, grid[0] * grid[1])
        except NotFollowable as exc:
            reasons.append(f"after {key(node)}: {exc}")
            continue
        if sites.layers and (sites.means or sites.sums):
            return TokenAxis(key(node), grid, len(shapes[key(node)]) - 1, sites)
        reasons.append(f"after {key(node)}: " + ("no layer runs per token" if sites.layers == 0 else "no token mean"))
    return "; ".join(reasons[:3]) or "no reshape flattens an image grid into tokens"


def _merged_grid(node: onnx.NodeProto, shapes: dict) -> tuple[int, int] | None:
    """(H, W) when ``node`` turns ``[..., H, W]`` into ``[..., H*W]`` (both over 1)."""
    if node.op_type not in MERGES or node.output[0] not in shapes or node.input[0] not in shapes:
        return None
    source, out = shapes[node.input[0]], shapes[node.output[0]]
    if len(source) < 3 or len(out) != len(source) - 1 or min(source[-2:]) < 2:
        return None
    if tuple(out[:-1]) != tuple(source[:-2]) or out[-1] != source[-2] * source[-1]:
        return None
    return int(source[-2]), int(source[-1])


def drop_tokens(model: onnx.ModelProto, axis: TokenAxis, keep: list[int]) -> onnx.ModelProto:
    """``model`` whose blocks see only the tokens ``keep`` (row-major grid positions, kept in this order)."""
    check_keep(keep, axis.count)
    out = copy_of(model)
    nodes = by_key(out)
    constants = Constants(out)
    for name, index, flat in axis.sites.edits:
        node = nodes[name]
        value = constants.values[node.input[index]].copy()
        value.reshape(-1)[flat] = len(keep)
        constants.replace(node, index, value, f"tokens{len(keep)}")
    for name, index, at in axis.sites.uniform:  # the same value for every token: any N' of them will do
        node = nodes[name]
        value = np.take(constants.values[node.input[index]], range(len(keep)), axis=at)
        constants.replace(node, index, value, f"tokens{len(keep)}")
    indices = constants.add(np.asarray(keep, dtype=np.int64), f"{axis.merge}_kept_tokens")
    gathered = f"{axis.merge}_kept"
    rename_inputs(out, {axis.merge: gathered})
    gather = onnx.helper.make_node("Gather", [axis.merge, indices], [gathered], name=gathered, axis=axis.axis)
    out.graph.node.append(gather)
    sort_nodes(out)
    return out


def check_keep(keep: list[int], count: int) -> None:
    if not keep or len(set(keep)) != len(keep) or min(keep) < 0 or max(keep) >= count:
        raise UserError(f"the kept tokens must be distinct positions in [0, {count - 1}], got {keep}")
