"""Peers side by side with ``svtprune compress`` at the same parameter budget, no fine-tuning.

    python tools/bench_peers.py --report /tmp/bench_keep/primesvt_1.0.report.json
(a) Torch-Pruning (L2 magnitude pruner) on the PyTorch checkpoint the ONNX file was exported from,
    once with spikingjelly's LIFNode and once with a plain-torch LIF (same arithmetic), its ratio
    searched so the pruned model keeps the same fraction of parameters as ours;
(b) onnxsim's ONNX structured pruning on the same ONNX file at the same sparsity.
Accuracy is measured on the held-out split ``compress`` reported on (same seed). Prints markdown.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from svtprune.data import load_npz  # noqa: E402
from svtprune.evaluate import top1  # noqa: E402
from svtprune.graph.io import load_model, param_bytes  # noqa: E402
from svtprune.jobs.common import split  # noqa: E402
from svtprune.jobs.options import SplitOptions  # noqa: E402
from svtprune.runtime import logits_of, make_session  # noqa: E402
from svtprune.spiking.export import load_weights  # noqa: E402
from svtprune.spiking.zoo import build_model, reset_states  # noqa: E402


class PlainLIF(torch.nn.Module):
    """spikingjelly's multi-step LIF (tau, hard reset to 0, decay_input) in plain torch ops."""

    def __init__(self, tau: float, threshold: float) -> None:
        super().__init__()
        self.tau, self.threshold = tau, threshold

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x_seq[0])
        spikes = []
        for t in range(x_seq.shape[0]):
            v = v + (x_seq[t] - v) / self.tau
            spike = (v >= self.threshold).float()
            v = v * (1.0 - spike)
            spikes.append(spike)
        return torch.stack(spikes)


def plain_lif(model: torch.nn.Module) -> torch.nn.Module:
    from spikingjelly.activation_based import neuron

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, neuron.LIFNode):
                setattr(parent, name, PlainLIF(float(child.tau), float(child.v_threshold)))
    return model


@torch.no_grad()
def torch_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    predictions = []
    for start in range(0, len(x), 250):
        reset_states(model)
        predictions.append(model(torch.from_numpy(x[start : start + 250])).argmax(1).numpy())
    reset_states(model)
    return 100.0 * float((np.concatenate(predictions) == y).mean())


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torch_pruning_at(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """Torch-Pruning's L2 magnitude pruner at one per-layer ratio (classifier head kept)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    reset_states(pruned)
    example = torch.randn(2, 1, 28, 28)
    pruner = tp.pruner.MagnitudePruner(
        pruned,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[pruned.net.head],
    )
    pruner.step()
    reset_states(pruned)
    return pruned


def torch_pruning_matched(model: torch.nn.Module, keep_fraction: float) -> tuple[torch.nn.Module, float]:
    """Bisect Torch-Pruning's ratio until the parameter count matches ``keep_fraction`` of the original."""
    low, high, best = 0.0, 0.95, None
    total = count(model)
    if count(torch_pruning_at(model, 0.5)) == total:  # it finds nothing it may remove: no point bisecting
        return copy.deepcopy(model), 0.5
    for _ in range(9):
        middle = (low + high) / 2
        pruned = torch_pruning_at(model, middle)
        if count(pruned) / total > keep_fraction:
            low = middle
        else:
            high = middle
        if best is None or abs(count(pruned) / total - keep_fraction) < abs(count(best[0]) / total - keep_fraction):
            best = (pruned, middle)
    assert best is not None
    return best


def run_torch_pruning(checkpoint: Path, keep_fraction: float, x: np.ndarray, y: np.ndarray) -> list[dict]:
    config, state = load_weights(checkpoint)
    model = build_model(config)
    model.load_state_dict(state)
    model.eval()
    rows = []
    for neuron_kind, candidate in (("LIFNode (spikingjelly)", model), ("plain LIF", plain_lif(model))):
        row: dict = {"neuron": neuron_kind, "params_before": count(candidate)}
        try:
            row["accuracy_before"] = torch_accuracy(candidate, x, y)
            pruned, ratio = torch_pruning_matched(candidate, keep_fraction)
            row.update(ratio=round(ratio, 4), params_after=count(pruned))
            row["accuracy_after"] = torch_accuracy(pruned, x, y)
            row["widths"] = {
                name: (m.out_channels if hasattr(m, "out_channels") else m.out_features)
                for name, m in pruned.named_modules()
                if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Linear)
            }
        except Exception as exc:  # a peer's failure is a result to report, not a crash
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            row["traceback"] = traceback.format_exc(limit=4)
        rows.append(row)
    return rows


def run_onnxsim(model_path: Path, sparsity: float, x: np.ndarray, y: np.ndarray) -> dict:
    row: dict = {"sparsity": round(sparsity, 4)}
    try:
        import onnxsim
        from onnxsim.pruning import apply_structured_pruning

        row["version"] = getattr(onnxsim, "__version__", "?")
        original = load_model(model_path)
        pruned = apply_structured_pruning(original, sparsity=sparsity)
        row.update(param_bytes_before=param_bytes(original), param_bytes_after=param_bytes(pruned))
        row["accuracy_after"] = top1(logits_of(make_session(pruned), x), y)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        row["traceback"] = traceback.format_exc(limit=4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True, help="a compress report (out.report.json)")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models/reference/spikformer_fmnist.pt")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = json.loads(args.report.read_text())
    keep = report["compressed"]["param_bytes"] / report["original"]["param_bytes"]
    _search, held = split(load_npz(report["data"]["path"]), SplitOptions(seed=report["data"]["seed"]))
    assert len(held) == report["data"]["held_out_images"], "the report's split cannot be re-drawn"
    results = {
        "ours": {
            "method": report["method"],
            "keep_fraction": keep,
            "accuracy_before": report["original"]["accuracy"],
            "accuracy_after": report["compressed"]["accuracy"],
        },
        "torch_pruning": run_torch_pruning(args.checkpoint, keep, held.x, held.y),
        "onnxsim": run_onnxsim(Path(report["model"]), 1 - keep, held.x, held.y),
    }
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    ours = results["ours"]
    print("| tool | model | parameters kept | accuracy before | accuracy after (held-out) | note |")
    print("|---|---|---|---|---|---|")
    print(
        f"| svtprune compress ({ours['method']}) | ONNX | {keep:.1%} of bytes | {ours['accuracy_before']:.2f} | "
        f"{ours['accuracy_after']:.2f} | least-squares recovery, no fine-tuning |"
    )
    for row in results["torch_pruning"]:
        kept = f"{row['params_after'] / row['params_before']:.1%}" if "params_after" in row else "-"
        after = f"{row['accuracy_after']:.2f}" if "accuracy_after" in row else "-"
        before = f"{row['accuracy_before']:.2f}" if "accuracy_before" in row else "-"
        note = row.get("error", f"ratio {row.get('ratio')}")
        print(f"| Torch-Pruning L2 | PyTorch, {row['neuron']} | {kept} | {before} | {after} | {note} |")
    o = results["onnxsim"]
    kept = f"{o['param_bytes_after'] / o['param_bytes_before']:.1%}" if "param_bytes_after" in o else "-"
    after = f"{o['accuracy_after']:.2f}" if "accuracy_after" in o else "-"
    print(
        f"| onnxsim {o.get('version', '')} structured | ONNX | {kept} | {ours['accuracy_before']:.2f} | {after} | "
        f"{o.get('error', 'sparsity ' + str(o['sparsity']))} |"
    )


if __name__ == "__main__":
    main()
