"""What a careful new user gets wrong, refused up front in one line (issue 19, items 3 and 6).

Data the model would score wrongly (NaN pixels, labels outside its classes, labels like 1.5),
models svtprune cannot feed (two inputs, a float16 input), and out-of-range options. The
headline cases run the command line as a subprocess; the option checks run the same entry
point (``svtprune.cli.app.run``) in-process, so the file stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from svtprune.checks import check_model, classes_of
from svtprune.cli.app import run
from svtprune.data import load_npz
from svtprune.errors import UserError
from tests.test_cli import assert_user_error, svtprune

CLASSES = 10


def tiny_model(input_type: int = TensorProto.FLOAT, second_input: bool = False, shaped: bool = True) -> onnx.ModelProto:
    """x (N x 1 x 4 x 4) -> Flatten -> Gemm -> 10 logits; a non-float input is cast first, as exporters do."""
    rng = np.random.default_rng(0)
    inputs = [helper.make_tensor_value_info("x", input_type, ["N", 1, 4, 4])]
    nodes, source = [], "x"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["x_float"], to=TensorProto.FLOAT))
        source = "x_float"
    nodes.append(helper.make_node("Flatten", [source], ["flat"], axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", "W", "b"], ["gemm" if second_input else "logits"]))
    if second_input:
        inputs.append(helper.make_tensor_value_info("shift", TensorProto.FLOAT, ["N", CLASSES]))
        nodes.append(helper.make_node("Add", ["gemm", "shift"], ["logits"]))
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, CLASSES)).astype(np.float32), "W"),
        numpy_helper.from_array(np.zeros(CLASSES, np.float32), "b"),
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES] if shaped else None)
    graph = helper.make_graph(nodes, "tiny", inputs, [output], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("user_input")
    onnx.save(tiny_model(), folder / "tiny.onnx")
    onnx.save(tiny_model(second_input=True), folder / "two_inputs.onnx")
    onnx.save(tiny_model(TensorProto.FLOAT16), folder / "float16.onnx")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((120, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, CLASSES, 120)
    np.savez(folder / "good.npz", x=x, y=y)
    np.savez(folder / "float64.npz", x=x.astype(np.float64), y=y)
    nan = x.copy()
    nan[5, 0, 1, 1], nan[5, 0, 2, 2], nan[9, 0, 0, 0] = np.nan, np.nan, np.inf
    np.savez(folder / "nan.npz", x=nan, y=y)
    labels = y.copy()
    labels[[7, 50, 51]] = [CLASSES, -1, 12]
    np.savez(folder / "labels.npz", x=x, y=labels)
    fractions = y.astype(np.float64)
    fractions[[3, 8]] = [1.5, 2.25]
    np.savez(folder / "fractions.npz", x=x, y=fractions)
    return {p.stem: p for p in folder.iterdir()}


def test_nan_pixels_name_the_file_the_count_and_the_first_image(files: dict[str, Path]) -> None:
    result = svtprune("eval", str(files["tiny"]), "--data", str(files["nan"]))
    assert_user_error(result, "3 non-finite values")
    assert "in 2 images, the first in image 5" in result.stderr and str(files["nan"]) in result.stderr


def test_labels_outside_the_classes_are_refused_by_eval_and_compress(files: dict[str, Path], tmp_path: Path) -> None:
    words = "3 labels lie outside the model's 10 classes (0..9), the first at index 7 (label 10)"
    assert_user_error(svtprune("eval", str(files["tiny"]), "--data", str(files["labels"])), words)
    out = tmp_path / "small.onnx"
    assert_user_error(svtprune("compress", str(files["tiny"]), "--data", str(files["labels"]), "-o", str(out)), words)
    assert not list(tmp_path.iterdir()), "nothing may be written on bad input"


def test_labels_that_are_not_whole_numbers_are_refused(files: dict[str, Path]) -> None:
    result = svtprune("eval", str(files["tiny"]), "--data", str(files["fractions"]))
    assert_user_error(result, "2 labels that are not whole numbers, the first at index 3 (1.5)")


def test_float64_data_is_converted_with_a_note_and_scores_the_same(files: dict[str, Path]) -> None:
    as_float32 = svtprune("eval", str(files["tiny"]), "--data", str(files["good"]), "--json")
    as_float64 = svtprune("eval", str(files["tiny"]), "--data", str(files["float64"]), "--json")
    assert as_float32.returncode == 0 and as_float64.returncode == 0, as_float64.stderr
    assert "note:" not in as_float32.stderr
    assert "'x' converted from float64 to float32" in as_float64.stderr.replace("\n", " ")
    assert json.loads(as_float64.stdout)["accuracy"] == json.loads(as_float32.stdout)["accuracy"]  # stdout: JSON only


@pytest.mark.parametrize(
    ("model", "words"),
    [("two_inputs", "exactly one (image) input; this one has 'x', 'shift'"), ("float16", "input 'x' is float16")],
)
def test_models_svtprune_cannot_feed_are_refused(files: dict[str, Path], model: str, words: str) -> None:
    assert_user_error(svtprune("eval", str(files[model]), "--data", str(files["good"])), words)


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    model = tiny_model()
    model.graph.input.extend(
        helper.make_tensor_value_info(t.name, TensorProto.FLOAT, None) for t in model.graph.initializer
    )
    check_model(model, "old_exporter.onnx")  # IR < 4 exporters list weights as inputs: still one image input
    with pytest.raises(UserError, match="float16"):
        check_model(tiny_model(TensorProto.FLOAT16), "half.onnx")


def test_classes_come_from_the_model_even_without_a_declared_output_shape() -> None:
    x = np.zeros((2, 1, 4, 4), np.float32)
    assert classes_of(tiny_model(), x) == classes_of(tiny_model(shaped=False), x) == CLASSES


def test_data_conversions_and_overflow(tmp_path: Path) -> None:
    pixels = np.arange(2 * 16, dtype=np.uint8).reshape(2, 1, 4, 4)
    np.savez(tmp_path / "uint8.npz", x=pixels, y=np.array([1.0, 3.0]))
    data = load_npz(tmp_path / "uint8.npz")
    assert data.converted_from == "uint8" and data.x.dtype == np.float32 and data.y.tolist() == [1, 3]
    assert np.array_equal(data.x, pixels.astype(np.float32))
    np.savez(tmp_path / "f32.npz", x=pixels.astype(np.float32))
    assert load_npz(tmp_path / "f32.npz").converted_from is None
    huge = np.zeros((3, 1, 4, 4))
    huge[2, 0, 0, 0] = 1e300  # finite in float64, Inf in the float32 the model sees
    np.savez(tmp_path / "huge.npz", x=huge)
    with pytest.raises(UserError, match="1 non-finite values .* in 1 images, the first in image 2"):
        load_npz(tmp_path / "huge.npz")


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """The command line's entry point in-process: exit code and what it printed on stderr."""
    code = run([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["eval", "{tiny}", "--data", "{good}", "--batch", "0"], "--batch"),
        (["eval", "{tiny}", "--data", "{good}", "--batch", "-3"], "--batch"),
        (["verify", "{tiny}", "{tiny}", "--plan", "{good}", "--samples", "-3"], "--samples"),
        (["verify", "{tiny}", "{tiny}", "--plan", "{tiny}"], "is not a plan JSON"),
        (
            [
                "finetune",
                "{tiny}",
                "--teacher",
                "{tiny}",
                "--data",
                "{good}",
                "--val",
                "{good}",
                "-o",
                "{out}",
                "--lr",
                "nan",
            ],
            "--lr",
        ),  # fmt: skip
        (["prune", "{tiny}", "--importance", "taylor", "-o", "{out}"], "--importance 'taylor' needs calibration"),
        (["prune", "{tiny}", "--importance", "l3", "-o", "{out}"], "--importance must be one of l2, l1"),
        (["export", "--embed", "0", "-o", "{out}"], "--embed"),
        (["export", "--T", "0", "-o", "{out}"], "--T"),
        (
            ["export", "--embed", "36", "--heads", "8", "-o", "{out}"],
            "--embed must be a multiple of the number of heads",
        ),
        (["export", "--embed", "4", "-o", "{out}"], "--embed 4 is too small for spikformer"),
        (["export", "--config", "spikformer_huge", "-o", "{out}"], "--config unknown configuration"),
        (["export", "--arch", "qkformer", "--depths", "4", "-o", "{out}"], "--depths qkformer has three stages"),
        (["export", "--arch", "maxformer", "--heads", "4", "-o", "{out}"], "--heads does not apply to maxformer"),
        (["export", "--config", "sdt_8_384", "--patch-size", "16", "-o", "{out}"], "--patch-size applies to"),
        (["export", "--config", "sdt_8_384", "--arch", "qkformer", "-o", "{out}"], "--arch 'qkformer' conflicts"),
        (["export", "--mlp-ratio", "0", "-o", "{out}"], "--mlp-ratio"),
        (["export", "--calib-images", "1", "-o", "{out}"], "--calib-images"),
        (["quantize", "{tiny}", "--data", "{good}", "--layout", "quick", "-o", "{out}"], "--layout unknown value"),
        (["compress", "{tiny}", "--data", "{good}", "--layout", "fastst", "-o", "{out}"], "--layout unknown value"),
        (["compress", "{tiny}", "--data", "{good}", "--max-images", "50", "-o", "{out}"], "--max-images must be 0"),
        (["quantize", "{tiny}", "--data", "{good}", "--max-images", "-1", "-o", "{out}"], "--max-images"),
        (
            [
                "compress",
                "{tiny}",
                "--data",
                "{good}",
                "--min-speedup",
                "1.5",
                "--min-energy-saving",
                "0.5",
                "-o",
                "{out}",
            ],
            "choose one",
        ),
    ],
)
def test_out_of_range_options_are_one_line_naming_the_flag(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], words: str
) -> None:
    paths = {**{name: str(path) for name, path in files.items()}, "out": str(tmp_path / "out.onnx")}
    code, err = cli(capsys, *(arg.format(**paths) for arg in args))
    assert code == 2, err
    assert words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir()), "nothing may be written on bad input"
