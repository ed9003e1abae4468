"""Within-matrix block sparsity with stock ONNX operators vs the dense layer (issue 7).

python tools/bench_blocksparse.py   # one ORT thread; 1x1 convs of the reference Spikformer's MLP shapes

The only stock-operator form that skips zero blocks: per block row of the weight, Gather the
input channels of its kept blocks, a Conv over them, then Concat the block rows. Checked
against the dense layer holding the same zeroed blocks.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

BLOCK = 16
TOKENS = 49  # 7 x 7 patches


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options)


def fastest_ms(run: ort.InferenceSession, x: np.ndarray, repeats: int) -> float:
    run.run(None, {"x": x})
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run.run(None, {"x": x})
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def one_graph(nodes: list, x_shape: list[int], initializers: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def compare(rows: int, c_in: int, c_out: int, keep: float, repeats: int) -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((c_out // BLOCK, c_in // BLOCK)) < keep
    mask[np.arange(len(mask)), rng.integers(0, mask.shape[1], len(mask))] = True  # no empty block row
    weight = (rng.normal(size=(c_out, c_in, 1)) * np.kron(mask, np.ones((BLOCK, BLOCK)))[:, :, None]).astype(np.float32)
    x_shape = [rows, c_in, TOKENS]
    dense = one_graph([helper.make_node("Conv", ["x", "w"], ["y"])], x_shape, [numpy_helper.from_array(weight, "w")])
    nodes, initializers = [], []
    for row, kept in enumerate(mask):
        channels = np.concatenate([np.arange(b * BLOCK, (b + 1) * BLOCK) for b in np.nonzero(kept)[0]])
        block_row = np.ascontiguousarray(weight[row * BLOCK : (row + 1) * BLOCK][:, channels])
        initializers += [numpy_helper.from_array(channels, f"i{row}"), numpy_helper.from_array(block_row, f"w{row}")]
        nodes += [
            helper.make_node("Gather", ["x", f"i{row}"], [f"g{row}"], axis=1),
            helper.make_node("Conv", [f"g{row}", f"w{row}"], [f"y{row}"]),
        ]
    nodes.append(helper.make_node("Concat", [f"y{row}" for row in range(len(mask))], ["y"], axis=1))
    sparse = one_graph(nodes, x_shape, initializers)
    x = rng.random(x_shape).astype(np.float32)
    dense_run, sparse_run = session(dense), session(sparse)
    assert np.allclose(dense_run.run(None, {"x": x})[0], sparse_run.run(None, {"x": x})[0], atol=1e-3)
    print(
        f"rows {rows}, {c_in}->{c_out}, {BLOCK}x{BLOCK} blocks, {mask.mean():.0%} kept: "
        f"dense {fastest_ms(dense_run, x, repeats):.3f} ms, block-sparse {fastest_ms(sparse_run, x, repeats):.3f} ms"
    )


if __name__ == "__main__":
    for rows, repeats in ((256, 20), (4, 200)):  # batch 64 x T=4, batch 1 x T=4
        for keep in (0.5, 0.25):
            compare(rows, 64, 256, keep, repeats)  # fc1
            compare(rows, 256, 64, keep, repeats)  # fc2
