"""SOP/energy counting against a hand-counted tiny model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from svtprune.hardware.energy import E_AC_PJ, E_MAC_PJ, measure_energy


def _tiny() -> onnx.ModelProto:
    """x[N,1,2,4] -MatMul W1[4,3]-> real; Greater 0 -> Cast -> spikes[N,1,2,3] -MatMul W2[3,5]-> y."""
    w1 = np.array([[1, -1, 0], [0, 1, -1], [1, 0, 1], [-1, 1, 1]], dtype=np.float32)
    w2 = np.ones((3, 5), dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Greater", ["h", "zero"], ["g"], name="fire"),
        helper.make_node("Cast", ["g"], ["s"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("MatMul", ["s", "w2"], ["y"], name="fc2"),
    ]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array(0, dtype=np.float32), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 2, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_sops_match_hand_count() -> None:
    x = np.array(
        [
            [[1, 0, 0, 0], [0, 0, 1, 0]],  # h = [1,-1,0], [1,0,1] -> spikes 1,0,0 / 1,0,1 -> 3
            [[0, 0, 0, 1], [0, 0, 0, 0]],
        ],  # h = [-1,1,1], [0,0,0] -> spikes 0,1,1 / 0,0,0 -> 2
        dtype=np.float32,
    )
    report = measure_energy(_tiny(), x[:, None], batch=1)
    fc1, fc2 = report.layers
    # fc1: real input; per image 2 rows x 3 outputs x 4 inputs = 24 MACs.
    assert not fc1.spike_input and fc1.macs == 24 and fc1.ops == 24
    # fc2: spike input; dense 2 x 5 x 3 = 30 MACs; 5 spikes of 12 inputs over 2 images.
    assert fc2.spike_input and fc2.macs == 30
    assert np.isclose(fc2.firing_rate, 5 / 12)
    # Each spike fans out to 5 outputs: (3 + 2) spikes x 5 / 2 images = 12.5 SOPs per image.
    assert np.isclose(fc2.ops, 12.5)
    assert np.isclose(report.energy_uj, (24 * E_MAC_PJ + 12.5 * E_AC_PJ) * 1e-6)
    assert report.to_dict()["total_sops"] == 12.5


def test_silent_network_costs_only_the_real_layer() -> None:
    x = -np.abs(np.random.default_rng(0).normal(size=(3, 2, 4))).astype(np.float32) * 0  # all zero
    report = measure_energy(_tiny(), x[:, None])
    assert report.layers[1].ops == 0 and report.layers[1].spike_input
    assert np.isclose(report.energy_uj, 24 * E_MAC_PJ * 1e-6)


def test_energy_cli_json_and_bad_input(tmp_path) -> None:  # noqa: ANN001
    import json

    from typer.testing import CliRunner

    from svtprune.cli import app

    onnx.save(_tiny(), tmp_path / "tiny.onnx")
    x = np.ones((4, 1, 2, 4), dtype=np.float32) * np.array([1, 0, 0, 0], dtype=np.float32)
    np.savez(tmp_path / "val.npz", x=x)
    result = CliRunner().invoke(
        app, ["energy", str(tmp_path / "tiny.onnx"), "--data", str(tmp_path / "val.npz"), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # h = [1, -1, 0] in both rows -> one spike per row, fanned out to 5 outputs: 10 SOPs per image.
    assert report["total_sops"] == 10 and report["total_macs_real_input"] == 24
    assert report["constants"]["E_MAC_pJ"] == 4.6 and report["constants"]["E_AC_pJ"] == 0.9
