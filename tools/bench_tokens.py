"""Benchmark for issue 30 item 5: static, training-free token dropping in a reference Spikformer.

python tools/bench_tokens.py models/reference/spikformer_fmnist.pt --data models/data/fashion_mnist_val.npz

An exploration, not a product route. After the patch stem, a Spikformer's blocks see an H x W
grid of tokens and only mix them in the spiking attention's sums and the final mean, so a token can
be left out of the blocks without a retrained weight. Tokens are ranked without labels: by how far
leaving each one out moves the logits on the calibration images. For each time step count T' and
each number k of dropped tokens the script reports the held-out accuracy (the first 1,000 images
calibrate, the next 3,000 score), then exports the chosen files with the project's exporter and
times them at batch 1 on one thread, interleaved, against the shipped reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_timesteps import interleaved_ms  # noqa: E402

from svtprune.data import load_npz  # noqa: E402
from svtprune.spiking.export import build_checked, export_module, load_weights  # noqa: E402
from svtprune.spiking.zoo import reset_states  # noqa: E402


class TokensDropped(torch.nn.Module):
    """The zoo Spikformer at ``time_steps`` whose blocks and token mean see only ``keep``."""

    def __init__(self, model: torch.nn.Module, time_steps: int, keep: list[int] | None) -> None:
        super().__init__()
        self.net = model.net
        self.time_steps = time_steps
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net.T = self.time_steps
        seq = self.net.patch_embed(self.net._to_sequence(x))
        if self.keep is not None:  # one row of kept tokens: the blocks only flatten the grid
            seq = seq.flatten(3)[..., self.keep].unsqueeze(3)
        for block in self.net.blocks:
            seq = block(seq)
        return self.net.head(seq.flatten(3).mean(-1)).mean(0)


@torch.no_grad()
def logits(module: TokensDropped, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    out = []
    for start in range(0, len(x), batch):
        out.append(module(x[start : start + batch]))
        reset_states(module)
    return torch.cat(out)


def token_ranking(model: torch.nn.Module, x: torch.Tensor, time_steps: int) -> np.ndarray:
    """Tokens, least important first: the mean logit change when each one alone is left out."""
    full = TokensDropped(model, time_steps, None)
    with torch.no_grad():
        count = model.net.patch_embed(model.net._to_sequence(x[:1])).flatten(3).shape[-1]
    reset_states(full)
    reference = logits(full, x)
    change = np.zeros(count)
    for token in range(count):
        keep = [t for t in range(count) if t != token]
        change[token] = (logits(TokensDropped(model, time_steps, keep), x) - reference).abs().mean().item()
    return np.argsort(change, kind="stable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a checkpoint from tools/train_reference.py (arch spikformer)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--drops", default="0,5,9,13,17,24", help="numbers of tokens to drop")
    parser.add_argument("--steps", default="4,3,2", help="time step counts")
    parser.add_argument("--rank-images", type=int, default=200)
    parser.add_argument("--time", default="3:0,3:13,2:0,2:9,2:13,2:17", help="T':k files to export and time")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    config, state = load_weights(args.weights)
    if config.arch != "spikformer":
        raise SystemExit(f"{config.arch}: only Spikformer's blocks take a flat row of tokens here")
    model = build_checked(config, state).eval()
    data = load_npz(args.data)
    x = torch.from_numpy(np.asarray(data.x, dtype=np.float32))
    calibration, held_out, labels = x[:1000], x[1000:4000], np.asarray(data.y)[1000:4000]
    order = token_ranking(model, calibration[: args.rank_images], config.T)
    print(f"{len(order)} tokens, least important first: {order.tolist()}")
    drops = [int(k) for k in args.drops.split(",")]
    for steps in (int(t) for t in args.steps.split(",")):
        row = []
        for k in drops:
            keep = None if k == 0 else sorted(order[k:].tolist())
            predicted = logits(TokensDropped(model, steps, keep), held_out).argmax(1).numpy()
            row.append(f"drop {k}: {100 * (predicted == labels).mean():.2f}%")
        print(f"T'={steps}: " + ", ".join(row), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for item in ["4:0"] + args.time.split(","):
            steps, k = (int(v) for v in item.split(":"))
            keep = None if k == 0 else sorted(order[k:].tolist())
            module = TokensDropped(build_checked(config, state), steps, keep)
            reset_states(module)
            path = f"{folder}/T{steps}_drop{k}.onnx"
            export_module(module, torch.zeros(2, config.in_channels, config.img_size, config.img_size), path)
            paths.append(path)
        times = interleaved_ms(paths, args.runs)
    for path, ms in zip(paths, times, strict=True):
        paired = statistics.median(a / b for a, b in zip(times[0], ms, strict=True))
        print(f"{Path(path).stem}: median {statistics.median(ms):.3f} ms, speed-up {paired:.2f}x (paired)")


if __name__ == "__main__":
    main()
