"""AQ4SViT benchmarks: the searches, the drift proxy's ranking power, and ONNX Runtime's own quantizers.

    python tools/bench_quant.py search models/reference/spikformer_fmnist.onnx --searches greedy beam exhaustive
    python tools/bench_quant.py proxy models/reference/spikformer_fmnist.onnx --settings 200
    python tools/bench_quant.py peers models/reference/spikformer_fmnist.onnx
    python tools/bench_quant.py rounding models/reference/spikformer_fmnist.onnx --calib 2000

Each prints markdown rows (for docs/benchmark-log.md) and writes a JSON record beside --keep when given.
All accuracies are ONNX Runtime CPU with default session options, as a user runs the file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from svtprune.data import load_npz  # noqa: E402
from svtprune.errors import ConstraintError  # noqa: E402
from svtprune.evaluate import top1  # noqa: E402
from svtprune.graph.io import load_model, param_bytes  # noqa: E402
from svtprune.jobs.common import split  # noqa: E402
from svtprune.jobs.options import SplitOptions  # noqa: E402
from svtprune.jobs.quant_step import DRIFT_IMAGES, GPTQ_IMAGES  # noqa: E402
from svtprune.jobs.quantize import quantize  # noqa: E402
from svtprune.quantization import FP32, ROUNDINGS, Quantizer, QuantScheme  # noqa: E402
from svtprune.runtime import logits_of, make_session  # noqa: E402
from svtprune.search.drift import DriftProbe  # noqa: E402

VAL = ROOT / "models" / "data" / "fashion_mnist_val.npz"


def run_searches(args: argparse.Namespace) -> list[dict]:
    print(
        "| model | search | max drop | memory saved | accuracy (search split) | accuracy (held-out) | drop | met | "
        "full evaluations | "
        "drift evaluations | gated out | wall s | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for search in args.searches:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            try:
                report = quantize(
                    args.model, args.data, Path(folder) / "q.onnx", args.max_drop, search, calib=args.calib,
                    beam_width=args.beam_width, seed=args.seed, rounding=args.rounding,
                    scale_codes=not args.float16_scales, int8_biases=not args.float16_biases,
                )  # fmt: skip
            except ConstraintError as failed:  # the row still counts: what the search chose, and that it missed
                report = failed.report
            wall = time.perf_counter() - started
        q = report["quantization"]
        row = {
            "model": args.model.stem,
            "search": search,
            "max_drop": args.max_drop,
            "memory_saving": report["memory_saving"],
            "param_bytes": report["compressed"]["param_bytes"],
            "accuracy": report["compressed"]["accuracy"],
            "original_accuracy": report["original"]["accuracy"],
            "drop": report["accuracy_drop"],
            "accuracy_search": report["compressed"]["accuracy_search"],
            "original_accuracy_search": report["original"]["accuracy_search"],
            "constraints_met": report["constraints_met"],
            "full": q["full_evaluations"],
            "drift": q["proxy_evaluations"],
            "gated": q["gated_out"],
            "wall": round(wall, 1),
            "load": round(os.getloadavg()[0], 1),
            "bits": {r["layer"]: r["bits"] for r in q["layers"]},
            "rounding": q["scheme"]["rounding"],
        }
        rows.append(row)
        print(
            f"| {row['model']} | {search} | {args.max_drop} | {row['memory_saving']:.1%} | "
            f"{row['original_accuracy_search']:.2f} -> {row['accuracy_search']:.2f} | "
            f"{row['original_accuracy']:.2f} -> {row['accuracy']:.2f} | {row['drop']:.2f} | "
            f"{'yes' if row['constraints_met'] else 'no'} | {row['full']} | "
            f"{row['drift']} | {row['gated']} | {row['wall']:.0f} | {row['load']} |",
            flush=True,
        )
    return rows


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def run_proxy(args: argparse.Namespace) -> dict:
    """Random bit settings: drift on the calibration batch vs accuracy on the search split."""
    model = load_model(args.model)
    search, _ = split(load_npz(args.data), SplitOptions(calib=args.calib, seed=args.seed))
    target = search.y if search.y is not None else logits_of(make_session(model), search.x).argmax(axis=1)
    baseline = top1(logits_of(make_session(model), search.x), target)
    quantizer = Quantizer(model)
    probe = DriftProbe(model, search.x[:DRIFT_IMAGES])
    rng = np.random.default_rng(args.seed)
    widths = np.array([FP32, 8, 4, 2])
    points = []
    for index in range(args.settings):
        # half the settings without 2-bit layers, half with up to 30% of them: the losses then spread
        # over the range a search decides in (0-10 points) instead of collapsing to chance
        p2 = 0.0 if index % 2 == 0 else rng.uniform(0.0, 0.3)
        probs = np.array([0.2, 0.35, 0.45 - p2, p2])
        setting = {layer.name: int(rng.choice(widths, p=probs / probs.sum())) for layer in quantizer.layers}
        candidate = quantizer.apply(setting)
        drift_started = time.perf_counter()
        drift = probe.drift(candidate)
        drift_seconds = time.perf_counter() - drift_started
        eval_started = time.perf_counter()
        accuracy = top1(logits_of(make_session(candidate), search.x), target)
        eval_seconds = time.perf_counter() - eval_started
        points.append((drift, accuracy, param_bytes(candidate), drift_seconds, eval_seconds))
        if index % 20 == 0:
            print(f"{index}/{args.settings} drift {drift:.4f} acc {accuracy:.2f}", file=sys.stderr, flush=True)
    drift, accuracy = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    near = baseline - accuracy <= 5.0
    result = {
        "model": args.model.stem,
        "settings": len(points),
        "baseline": baseline,
        "spearman_drift_vs_loss": spearman(drift, baseline - accuracy),
        "near_settings": int(near.sum()),
        "spearman_near": spearman(drift[near], baseline - accuracy[near]) if near.sum() > 2 else None,
        "median_drift_seconds": float(np.median([p[3] for p in points])),
        "median_eval_seconds": float(np.median([p[4] for p in points])),
        "points": points,
    }
    print(
        f"| {result['model']} | {result['settings']} | {result['spearman_drift_vs_loss']:.3f} | "
        f"{result['near_settings']} | {result['spearman_near']:.3f} | {result['median_drift_seconds']:.2f} | "
        f"{result['median_eval_seconds']:.2f} |"
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
        axes.scatter(drift, baseline - accuracy, s=8)
        axes.set_xscale("log")
        axes.set_xlabel("membrane drift on 64 calibration images")
        axes.set_ylabel("accuracy loss on the search split (points)")
        figure.tight_layout()
        figure.savefig(args.plot)
    return result


def run_peers(args: argparse.Namespace) -> list[dict]:
    """ONNX Runtime's weight quantizers on the same file, beside svtprune's uniform settings."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    data = load_npz(args.data)
    model = load_model(args.model)
    rows = []

    def record(name: str, path_or_model: object) -> None:
        candidate = load_model(path_or_model) if isinstance(path_or_model, Path) else path_or_model
        accuracy = top1(logits_of(make_session(candidate), data.x), data.y)
        size = os.path.getsize(path_or_model) if isinstance(path_or_model, Path) else None
        rows.append({"method": name, "param_bytes": param_bytes(candidate), "file_bytes": size, "accuracy": accuracy})
        print(f"| {name} | {param_bytes(candidate):,} | {size if size else '-'} | {accuracy:.2f} |", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        record("fp32 original", model)
        try:
            quantize_dynamic(str(args.model), str(folder / "dyn8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
            record("ORT quantize_dynamic int8 (per channel)", folder / "dyn8.onnx")
        except Exception as exc:  # a peer that fails is a result too
            print(f"| ORT quantize_dynamic int8 | failed: {str(exc).splitlines()[0][:120]} | | |")
        try:
            quantizer = MatMulNBitsQuantizer(load_model(args.model), block_size=32, is_symmetric=True)
            quantizer.process()
            import onnx

            onnx.save(quantizer.model.model, folder / "nbits4.onnx")
            record("ORT MatMulNBitsQuantizer 4-bit", folder / "nbits4.onnx")
        except Exception as exc:
            print(f"| ORT MatMulNBitsQuantizer 4-bit | failed: {str(exc).splitlines()[0][:120]} | | |")
        # the commands' storage (scale codes, int8 biases at <= 4 bits); mse rounding needs no calibration
        # images, so none of the 4,000 evaluated here is seen before
        ours = Quantizer(model, QuantScheme(scale_codes=not args.float16_scales, int8_biases=not args.float16_biases))
        for bits in (8, 4):
            setting = {layer.name: bits for layer in ours.layers}
            record(f"svtprune uniform int{bits} per channel (mse)", ours.apply(setting))
    return rows


def run_rounding(args: argparse.Namespace) -> list[dict]:
    """Uniform bit widths with each rounding, and each layer alone at 2 bits: held-out accuracy.

    gptq's Hessians come from the first GPTQ_IMAGES images of the search split; every accuracy is
    on the held-out split, which neither the calibration nor any choice here has seen.
    """
    model = load_model(args.model)
    search, held = split(load_npz(args.data), SplitOptions(calib=args.calib, seed=args.seed))
    target = held.y if held.y is not None else logits_of(make_session(model), held.x).argmax(axis=1)
    baseline = top1(logits_of(make_session(model), held.x), target)
    print(f"fp32: {baseline:.2f} on {len(held)} held-out images; calibration {GPTQ_IMAGES} search images")
    quantizers, rows = {}, []
    for rounding in args.roundings:
        started = time.perf_counter()
        scheme = QuantScheme(
            rounding=rounding, scale_codes=not args.float16_scales, int8_biases=not args.float16_biases
        )
        quantizers[rounding] = Quantizer(model, scheme, calib=search.x[:GPTQ_IMAGES])
        if rounding == "gptq":
            quantizers[rounding].hessians()  # timed apart: computed once per model, then cached
        print(f"{rounding}: Hessians {time.perf_counter() - started:.1f} s", flush=True)
    head = quantizers[args.roundings[0]].layers[-1].name
    names = [layer.name for layer in quantizers[args.roundings[0]].layers]
    settings = {f"all {b} bits": dict.fromkeys(names, b) for b in (8, 4, 2)}
    settings["all 2 bits, head 8"] = {**dict.fromkeys(names, 2), head: 8}
    if args.per_layer:
        settings.update({f"only {name} at 2": {name: 2} for name in names})
    print("| setting | param bytes | " + " | ".join(args.roundings) + " |")
    print("|---|---|" + "---|" * len(args.roundings))
    for label, setting in settings.items():
        row = {"setting": label, "accuracy": {}}
        for rounding, quantizer in quantizers.items():
            candidate = quantizer.apply(setting)
            row["param_bytes"] = param_bytes(candidate)
            row["accuracy"][rounding] = top1(logits_of(make_session(candidate), held.x), target)
        rows.append(row)
        accuracies = " | ".join(f"{row['accuracy'][r]:.2f}" for r in args.roundings)
        print(f"| {label} | {row['param_bytes']:,} | {accuracies} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["search", "proxy", "peers", "rounding"])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=VAL)
    parser.add_argument("--calib", type=int, default=1000, help="search-split images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-drop", type=float, default=1.5)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--searches", nargs="+", default=["greedy", "beam", "exhaustive"])
    parser.add_argument("--settings", type=int, default=200)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--rounding", choices=ROUNDINGS, default=None, help="search: weight rounding")
    parser.add_argument("--roundings", nargs="+", default=["nearest", "mse", "gptq"], choices=ROUNDINGS)
    parser.add_argument("--float16-scales", action="store_true", help="scales as float16 (default: uint8 codes)")
    parser.add_argument(
        "--float16-biases", action="store_true", help="biases/normalisation vectors as float16 (default: int8)"
    )
    parser.add_argument("--per-layer", action="store_true", help="rounding: each layer alone at 2 bits too")
    parser.add_argument("--keep", type=Path, default=None, help="JSON file for the raw results")
    args = parser.parse_args()
    parts = {"search": run_searches, "proxy": run_proxy, "peers": run_peers, "rounding": run_rounding}
    result = parts[args.part](args)
    if args.keep:
        args.keep.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
