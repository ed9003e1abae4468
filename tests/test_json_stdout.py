"""``--json`` leaves exactly one JSON object on stdout, whatever libraries print (issue 28, item 8).

onnx-graphsurgeon prints its ``[W]`` warnings on stdout through its own logger, here for a constant
branch it cannot fold (a Reshape whose shape is float); they belong on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from tests.model_builders import parse_with_weights
from tests.test_cli import svtprune


def test_graphsurgeon_warnings_stay_off_stdout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    model = parse_with_weights(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4, 8, 8] x) => (float[N, 6, 8, 8] y) {
            c = Constant <value = float[2] {1, 2}> ()
            d = Reshape(c, shape)
            a = Conv(x, w1)
            r = Relu(a)
            y = Conv(r, w2)
        }""",
        {"w1": rng.standard_normal((8, 4, 1, 1)), "w2": rng.standard_normal((6, 8, 1, 1)), "shape": np.array([5.0])},
    )
    onnx.save(model, tmp_path / "odd.onnx")
    result = svtprune("analyze", str(tmp_path / "odd.onnx"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["groups"] and len(result.stdout.strip().splitlines()) == 1
