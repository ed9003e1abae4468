"""Train a reference SViT on Fashion-MNIST (Debian's dataset-fashion-mnist) on the CPU.

Example (the command that made models/reference/spikformer_fmnist):
    python tools/train_reference.py --arch spikformer --epochs 5 --out models/reference/spikformer_fmnist
Writes OUT.pt (state dict + config) and OUT.train.log; exporting is `svtprune export`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from svtprune.data import read_fashion_mnist  # noqa: E402
from svtprune.spiking.zoo import ArchConfig, build_model, reset_states  # noqa: E402

VAL_SPLIT = slice(0, 2000)  # test images 0..1999 are the shipped validation split


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels and horizontal flips: cheap, and worth ~1 point."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), value=float(x.min()))
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()
    out = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch):
        logits = model(torch.from_numpy(x[start : start + batch]))
        reset_states(model)
        correct += int((logits.argmax(1).numpy() == y[start : start + batch]).sum())
    model.train()
    return 100.0 * correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="spikformer")
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--depths", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=60000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    config = ArchConfig(arch=args.arch, T=args.T, embed_dims=args.embed, depths=args.depths, num_heads=args.heads)
    model = build_model(config)
    train = read_fashion_mnist("train").subset(slice(0, args.train_images))
    test = read_fashion_mnist("test").subset(VAL_SPLIT)
    steps_per_epoch = len(train) // args.batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    out = Path(args.out)
    log = open(out.with_suffix(".train.log"), "a", buffering=1)
    log.write(f"# {' '.join(sys.argv)}\n# config {json.dumps(config.to_dict())}\n")
    started = time.time()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train), generator=generator).numpy()
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch : (step + 1) * args.batch]
            x = augment(torch.from_numpy(train.x[idx]), generator)
            y = torch.from_numpy(train.y[idx])
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            reset_states(model)
            running += float(loss.detach())
            if step % 100 == 99:
                log.write(
                    f"epoch {epoch + 1} step {step + 1}/{steps_per_epoch} loss {running / 100:.4f} "
                    f"t={time.time() - started:.0f}s\n"
                )
                running = 0.0
        acc = accuracy(model, test.x, test.y)
        log.write(f"epoch {epoch + 1} val_acc {acc:.2f} t={time.time() - started:.0f}s\n")
        torch.save(
            {
                "config": config.to_dict(),
                "state_dict": model.state_dict(),
                "val_acc": acc,
                "epochs_done": epoch + 1,
                "command": " ".join(sys.argv),
            },
            out.with_suffix(".pt"),
        )
    log.write(f"done in {time.time() - started:.0f}s\n")


if __name__ == "__main__":
    main()
