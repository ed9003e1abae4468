"""Streamed data (a memory-mapped .npy, a folder of images) reads as the same numbers as the .npz, lazily.

The oracle is the in-memory .npz of the same uint8 pixels normalised in float32: every source
must load bit for bit equal to it, and eval/compress on it must give the same reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svtprune.cli.app import run
from svtprune.data import Dataset, save_npz
from svtprune.data_folder import Preprocess, parse_preprocess
from svtprune.data_lazy import LazyImages
from svtprune.data_sources import load_data
from svtprune.errors import UserError
from svtprune.jobs.common import split
from svtprune.jobs.options import SplitOptions
from tests.conftest import SMALL
from tests.model_builders import spiking_model

MEAN, STD = 0.2860, 0.3530
IMAGES, CLASSES = 120, 4


def normalised(pixels: np.ndarray) -> np.ndarray:
    """The project's own normalisation of 8-bit images (as read_fashion_mnist does it), float32 throughout."""
    return (pixels.astype(np.float32) / np.float32(255.0) - np.float32(MEAN)) / np.float32(STD)


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same labelled images as .npz, .npy (+ .labels.npy), uint8 .npy and a PNG class folder."""
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (IMAGES, 28, 28), dtype=np.uint8)
    labels = np.sort(rng.integers(0, CLASSES, IMAGES))  # class-major: the folder's row order
    for row, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        write_png(root / "png" / f"class_{label}" / f"{row:03d}.png", image)
    x = normalised(pixels[:, None])
    save_npz(root / "data.npz", Dataset(x, labels))
    np.save(root / "data.npy", x)
    np.save(root / "data.labels.npy", labels)
    np.save(root / "raw.npy", pixels[:, None])
    save_npz(root / "raw.npz", Dataset(pixels[:, None].astype(np.float32), None))
    return {"npz": root / "data.npz", "npy": root / "data.npy", "png": root / "png", "root": root}


SPEC = f"mean={MEAN},std={STD}"


def test_npy_and_folder_load_bit_for_bit_as_the_npz(sources: dict[str, Path]) -> None:
    reference = load_data(sources["npz"])
    for data in (load_data(sources["npy"]), load_data(sources["png"], SPEC)):
        assert isinstance(data.x, LazyImages)  # read on access, not decoded whole
        assert data.x.shape == reference.x.shape and data.x.dtype == np.float32 and data.x.ndim == 4
        assert np.array_equal(np.asarray(data.x), reference.x)
        assert np.array_equal(data.y, reference.y)
    raw = load_data(sources["root"] / "raw.npy")
    assert raw.converted_from == "uint8" and raw.y is None
    assert np.array_equal(np.asarray(raw.x), load_data(sources["root"] / "raw.npz").x)


def test_lazy_images_index_as_numpy_does(sources: dict[str, Path]) -> None:
    dense = load_data(sources["npz"]).x
    lazy = load_data(sources["png"], SPEC).x
    mask = np.zeros(len(dense), bool)
    mask[[1, 50, 119]] = True
    for index in (3, -1, slice(5, 9), slice(None, None, 17), slice(200, 300), np.array([7, 2, 7]), [0, 4], mask):
        assert np.array_equal(lazy[index], dense[index]), index
    assert np.array_equal(lazy[2, 0, 5], dense[2, 0, 5]) and np.array_equal(lazy[1:3, 0], dense[1:3, 0])
    part = lazy.take_rows(np.array([10, 20, 30, 40]))  # what the split keeps: still lazy, rows composed
    assert isinstance(part, LazyImages) and len(part) == 4 and np.array_equal(part[1:3], dense[[20, 30]])
    data = load_data(sources["npy"])
    subset = data.subset(np.array([5, 6, 90]))
    assert isinstance(subset.x, LazyImages) and np.array_equal(subset.y, data.y[[5, 6, 90]])


def test_preprocess_string_and_json_file_agree(tmp_path: Path) -> None:
    spec = parse_preprocess("resize=36, crop=32,mean=0.49,0.48,0.45,std=0.25,0.24,0.26,channels=3")
    assert spec == Preprocess(resize=36, crop=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), channels=3)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"resize": 36, "crop": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26],
                                "channels": 3}))  # fmt: skip
    assert parse_preprocess(path) == spec
    for bad, words in [
        ("size=3", "unknown or repeated key"),
        ("crop=3,crop=4", "unknown or repeated key"),
        ("0.5,resize=3", "key=value"),
        ("resize=big", "numbers"),
        ("resize=3,4", "one whole number"),
        ("std=0", "std must be > 0"),
        ("channels=2", "channels must be 1 or 3"),
        ("mean=nan", "finite"),
    ]:
        with pytest.raises(UserError, match=words) as caught:
            parse_preprocess(bad)
        assert caught.value.option == "preprocess"


def test_resize_and_crop_make_mixed_sizes_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    wide, tall = rng.integers(0, 256, (28, 40), dtype=np.uint8), rng.integers(0, 256, (44, 28), dtype=np.uint8)
    write_png(tmp_path / "a.png", wide)
    write_png(tmp_path / "b.png", tall)
    with pytest.raises(UserError, match=r"b\.png: image is 44x28 where a\.png is 28x40"):
        load_data(tmp_path)
    data = load_data(tmp_path, "resize=28,crop=28")  # shorter side already 28: the crop alone, at the centre
    assert data.y is None  # a flat folder is unlabelled
    expected = np.stack([wide[:, 6:34], tall[8:36, :]])[:, None] / np.float32(255.0)
    assert np.array_equal(np.asarray(data.x), expected.astype(np.float32))
    assert load_data(tmp_path, "resize=14,crop=12,channels=3").x.shape == (2, 3, 12, 12)
    with pytest.raises(UserError, match="smaller than the preprocessing crop=30"):
        load_data(tmp_path, "crop=30")


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ({}, "no images"),
        ({"cat/notes.txt": b"x"}, "no images (.png, .jpg, .jpeg, .bmp, .webp) in its 1 class subfolders"),
        ({"cat/a.png": None, "loose.png": None}, "images outside them (such as loose.png)"),
        ({"cat/a.png": None, "cat/b.png": b"not a png", "dog/c.png": b"nor this"}, "b.png: not a readable image"),
        ({"a.png": None, "b.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 30}, "b.png: not a readable image"),
    ],
)
def test_bad_folders_fail_naming_the_path(tmp_path: Path, layout: dict, words: str) -> None:
    pixels = np.zeros((28, 28), np.uint8)
    for name, content in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_png(tmp_path / name, pixels) if content is None else (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError) as caught:
        load_data(tmp_path)
    assert str(tmp_path) in caught.value.problem and words in caught.value.problem


def test_npy_problems_are_one_line_errors(tmp_path: Path) -> None:
    bad = np.zeros((3, 1, 4, 4), np.float32)
    bad[2, 0, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(UserError) as caught:
        load_data(tmp_path / "nan.npy")
    assert caught.value.problem.endswith(
        "nan.npy: 'x' has 1 non-finite values (NaN or Inf) in 1 images, the first in image 2"
    )
    np.save(tmp_path / "flat.npy", np.zeros((3, 16), np.float32))
    with pytest.raises(UserError, match="must be N x C x H x W"):
        load_data(tmp_path / "flat.npy")
    np.save(tmp_path / "ok.npy", np.zeros((3, 1, 4, 4), np.float32))
    np.save(tmp_path / "ok.labels.npy", np.arange(4))
    with pytest.raises(UserError, match=r"ok\.labels\.npy: 'y' must have shape \(3,\)"):
        load_data(tmp_path / "ok.npy")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable .npy file"):
        load_data(tmp_path / "junk.npy")


def svtprune(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """The command line in-process (one export's start-up saved per call): exit code, stdout, stderr."""
    code = run([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def model(sources: dict[str, Path]) -> Path:
    """conftest's small spikformer, exported alone (the session fixture exports four models: minutes here)."""
    path = sources["root"] / "model.onnx"
    spiking_model(SMALL["spikformer"], seed=1, path=path)
    return path


def test_eval_is_identical_on_every_source(
    model: Path, sources: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    reports = []
    for data in (["--data", sources["npz"]], ["--data", sources["npy"]],
                 ["--data", sources["png"], "--preprocess", SPEC]):  # fmt: skip
        code, out, err = svtprune(capsys, "eval", model, *data, "--batch", "32", "--json")
        assert code == 0, err
        reports.append({k: v for k, v in json.loads(out).items() if not k.startswith(("latency", "sec", "peak_rss"))})
    assert reports[0] == reports[1] == reports[2] and reports[0]["samples"] == IMAGES


def test_compress_is_identical_on_every_source(model: Path, sources: dict[str, Path], tmp_path: Path) -> None:
    from svtprune.jobs.compress import compress

    def run(data: Path, name: str, preprocess: str | None = None) -> dict:
        report = compress(model, data, tmp_path / f"{name}.onnx", 30.0, method="uniform", preprocess=preprocess)
        return {k: report[k] for k in ("memory_saving", "accuracy_drop")} | {
            "original": report["original"]["accuracy"], "compressed": report["compressed"]["accuracy"],
            "evaluations": [{k: v for k, v in e.items() if k != "seconds"} for e in report["evaluations"]],
            "model": (tmp_path / f"{name}.onnx").read_bytes(), "plan": (tmp_path / f"{name}.plan.json").read_text(),
        }  # fmt: skip

    reference = run(sources["npz"], "npz")
    assert reference["memory_saving"] > 0
    assert run(sources["npy"], "npy") == reference
    assert run(sources["png"], "png", SPEC) == reference


def test_cli_errors_name_the_folder_and_the_flag(
    model: Path, sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, words in [
        (["--data", empty], f"{empty}: no images"),
        (["--data", sources["npz"], "--preprocess", SPEC], "--preprocess applies to image folders"),
        (["--data", sources["png"], "--preprocess", "crop=x"], "--preprocess values must be numbers"),
    ]:
        code, _out, err = svtprune(capsys, "eval", model, *args)
        assert code == 2 and words in " ".join(err.split()) and "Traceback" not in err, err
        assert len(err.strip().splitlines()) <= 3


def numbered(count: int) -> Dataset:
    """Images whose one pixel is their row number, so a split shows which rows it took."""
    return Dataset(np.arange(count, dtype=np.float32).reshape(count, 1, 1, 1), np.arange(count) % 3)


def rows(part: Dataset) -> list[int]:
    return np.asarray(part.x).ravel().astype(int).tolist()


def test_data_within_the_image_cap_splits_into_the_seeded_halves_of_every_image() -> None:
    search, held = split(numbered(300), SplitOptions(seed=3))
    order = np.random.default_rng(3).permutation(300)  # the rule as docs/data.md states it
    assert rows(search) == sorted(order[:150]) and rows(held) == sorted(order[150:])


def test_more_images_than_the_cap_split_a_seeded_sample() -> None:
    data = numbered(1000)
    search, held = split(data, SplitOptions(seed=5, max_images=200))
    assert len(search) == len(held) == 100 and not set(rows(search)) & set(rows(held))
    assert sorted(rows(search) + rows(held)) == sorted(np.random.default_rng(5).permutation(1000)[:200])
    assert (rows(search), rows(held)) == tuple(rows(p) for p in split(data, SplitOptions(seed=5, max_images=200)))
    assert rows(split(data, SplitOptions(seed=6, max_images=200))[0]) != rows(search)
    assert [len(p) for p in split(data, SplitOptions(calib=150, max_images=200))] == [150, 150]  # cap raised
    assert [len(p) for p in split(data, SplitOptions(max_images=0))] == [500, 500]


def test_a_sampled_split_of_a_streamed_source_stays_lazy(sources: dict[str, Path]) -> None:
    search, held = split(load_data(sources["npy"]), SplitOptions(max_images=100))
    in_memory = split(load_data(sources["npz"]), SplitOptions(max_images=100))
    assert isinstance(search.x, LazyImages) and isinstance(held.x, LazyImages)
    assert np.array_equal(np.asarray(search.x), in_memory[0].x) and np.array_equal(held.y, in_memory[1].y)
