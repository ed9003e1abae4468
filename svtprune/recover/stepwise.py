"""Run a model a piece at a time, so tapping layer after layer (each re-fitted before the next) costs one pass.

The re-fit needs each layer's input as the model computes it once every layer before it is
re-fitted. Running the graph up to each layer afresh costs O(depth^2) node runs (measured on a
9.3M-parameter Spikformer: 266 s per residual-stream candidate). Here each piece runs only the
nodes not run yet, fed with the values earlier pieces left, so all taps together cost one pass.
Earlier values stay valid because a layer is never upstream of its own input: re-fitting it in
graph order cannot change anything already computed.

Images go through in chunks; a caller's ``reduce`` shrinks each chunk's tapped value at once
(the re-fit keeps a few thousand rows), so memory follows the chunk and the graph's widest cut.
A graph that fixes its batch goes through in chunks of that size, the last padded with copies of its
images; what a caller sees of that chunk leaves the padding out where it can (``runtime_layout.unpadded``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from svtprune.costs import count_data
from svtprune.graph.taps import piece_of
from svtprune.runtime import make_session
from svtprune.runtime_layout import padded, unpadded

CHUNK_IMAGES = 256  # images per piece run: the calibration sets searches use (128) go through whole
Reduce = Callable[[int, np.ndarray], np.ndarray]  # (chunk index, value) -> what the caller keeps


class StepwiseRunner:
    """Values of ``model``'s tensors on ``x``, computed piece by piece; ``model`` may change downstream meanwhile."""

    def __init__(self, model: onnx.ModelProto, x: np.ndarray, chunk: int = CHUNK_IMAGES) -> None:
        self.model = model  # read afresh at every piece: callers install re-fitted weights in place
        self.feed = model.graph.input[0].name
        dims = model.graph.input[0].type.tensor_type.shape.dim
        self.size = dims[0].dim_value if dims and dims[0].dim_value > 0 else None  # the graph's fixed batch
        chunk = self.size or chunk
        self.chunks = [x[start : start + chunk] for start in range(0, len(x), chunk)]
        feeds = [padded(part, self.size) if self.size else part for part in self.chunks]
        self.values: list[dict[str, np.ndarray]] = [{self.feed: part} for part in feeds]
        self.done: set[int] = set()
        self.producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
        self.counted = False

    def value(self, name: str, reduce: Reduce | None = None) -> list[np.ndarray]:
        """``name``'s value on each chunk (after ``reduce``), running only the nodes not run before."""
        piece = self._piece(name)
        if not piece:  # the graph input, or a value an earlier piece left
            return [self._taken(i, known[name], reduce) for i, known in enumerate(self.values)]
        inputs, outputs = self._boundary(piece, name)
        session = make_session(self._segment(piece, inputs, outputs), arena=False)  # one run per chunk
        taken: list[np.ndarray] = []
        for index, known in enumerate(self.values):
            computed = session.run(outputs, {n: known[n] for n in inputs})
            known.update(zip(outputs, computed, strict=True))
            taken.append(self._taken(index, known[name], reduce))
        if not self.counted:  # a pass of the images, however many pieces it takes
            count_data(sum(len(part) for part in self.chunks))
            self.counted = True
        self.done |= set(piece)
        self._forget()
        return taken

    def _taken(self, index: int, value: np.ndarray, reduce: Reduce | None) -> np.ndarray:
        """What the caller gets of chunk ``index``'s ``value``: without a padded chunk's padding, then reduced."""
        real = len(self.chunks[index])
        if self.size and real < self.size:
            value = unpadded(value, real, self.size, 0)
        return value if reduce is None else reduce(index, value)

    def _piece(self, name: str) -> list[int]:
        """Indices (graph order) of the nodes ``name`` depends on that have not run yet."""
        needed: set[int] = set()
        stack = [name]
        while stack:
            index = self.producer.get(stack.pop())
            if index is None or index in needed or index in self.done:
                continue
            needed.add(index)
            stack.extend(i for i in self.model.graph.node[index].input if i)
        return sorted(needed)

    def _boundary(self, piece: list[int], name: str) -> tuple[list[str], list[str]]:
        """What the piece reads from earlier pieces, and what it must hand on (plus ``name``)."""
        nodes = self.model.graph.node
        inside = set(piece)
        initializers = {t.name for t in self.model.graph.initializer}
        produced = {out for i in piece for out in nodes[i].output if out}
        inputs = sorted({n for i in piece for n in nodes[i].input if n and n not in produced and n not in initializers})
        later = {n for i, node in enumerate(nodes) if i not in inside and i not in self.done for n in node.input}
        outputs = [out for i in piece for out in nodes[i].output if out and (out in later or out == name)]
        return inputs, list(dict.fromkeys(outputs))

    def _segment(self, piece: list[int], inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
        nodes = [self.model.graph.node[i] for i in piece]
        used = {n for node in nodes for n in node.input}
        weights = [t for t in self.model.graph.initializer if t.name in used]
        kinds = {n: helper.np_dtype_to_tensor_dtype(self.values[0][n].dtype) for n in inputs}
        return piece_of(self.model, nodes, kinds, outputs, weights)

    def _forget(self) -> None:
        """Drop values no node still to run reads (the graph input stays: a later piece may start there)."""
        nodes = self.model.graph.node
        wanted = {n for i, node in enumerate(nodes) if i not in self.done for n in node.input}
        for known in self.values:
            for stale in [n for n in known if n not in wanted and n != self.feed]:
                del known[stale]
