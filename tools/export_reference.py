"""Export a trained checkpoint to models/reference/NAME.onnx and write NAME.json beside it.

    python tools/export_reference.py models/reference/spikformer_fmnist.pt
NAME.json records the architecture, dataset and normalisation, the exact training and export
commands, and the accuracy on the shipped validation split measured both in PyTorch and in
ONNX Runtime (they must agree: the export keeps spikes exact).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from svtprune.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, load_npz  # noqa: E402
from svtprune.evaluate import evaluate  # noqa: E402
from svtprune.spiking.export import export_onnx, load_weights  # noqa: E402
from svtprune.spiking.zoo import build_model, reset_states  # noqa: E402

VAL = ROOT / "models" / "data" / "fashion_mnist_val.npz"


@torch.no_grad()
def torch_accuracy(config, state: dict, x: np.ndarray, y: np.ndarray) -> float:  # noqa: ANN001
    model = build_model(config)
    model.load_state_dict(state)
    model.eval()
    correct = 0
    for start in range(0, len(x), 250):
        correct += int(
            (model(torch.from_numpy(x[start : start + 250])).argmax(1).numpy() == y[start : start + 250]).sum()
        )
        reset_states(model)
    return 100.0 * correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.checkpoint = args.checkpoint.resolve()
    config, state = load_weights(args.checkpoint)
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    onnx_path = args.checkpoint.with_suffix(".onnx")
    export_onnx(config, onnx_path, state, force=True)
    data = load_npz(VAL)
    result = evaluate(onnx_path, data)
    info = {
        "name": args.checkpoint.stem,
        "architecture": {"spikformer": "Spikformer", "sdt": "Spike-driven Transformer", "qkformer": "QKFormer"}[
            config.arch
        ],
        "config": config.to_dict(),
        "source": "spikingjelly 2.0.0 activation_based.model zoo, LIF neurons (tau 2, hard reset)",
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist) training images; how many: --train-images in "
        "train_command (default 60,000)",
        "normalisation": {"mean": FASHION_MNIST_MEAN, "std": FASHION_MNIST_STD, "input": "x / 255, 1x28x28"},
        "train_command": f"python {checkpoint.get('command', '')}",
        "epochs": checkpoint.get("epochs_done"),
        "export_command": f"python tools/export_reference.py {args.checkpoint.relative_to(ROOT)}",
        "train_log": str(args.checkpoint.with_suffix(".train.log").relative_to(ROOT)),
        "validation_split": str(VAL.relative_to(ROOT)),
        "accuracy": round(result.accuracy, 2),
        "accuracy_pytorch": round(torch_accuracy(config, state, data.x, data.y), 2),
        "param_bytes": result.param_bytes,
        "file_bytes": result.file_bytes,
        "latency_ms_b1": round(result.latency_ms_b1, 2),
        "latency_ms_b64": round(result.latency_ms_b64, 1),
    }
    args.checkpoint.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
