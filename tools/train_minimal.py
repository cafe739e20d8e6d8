"""A minimal behaviour-cloning training loop over a built set, on CPU: copy it and make it yours.

    python tools/train_minimal.py DIR/dataset.zarr --steps 200

A small CNN learns from each sample's image whether to jump now (``label``) and for how long (``hold``, on
positives only), weighting samples by their class weight; it reports the validation split's accuracy if
the set has one. Needs PyTorch (``pip install torch``); jumpnet-stream itself does not.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from jumpnet_stream.training_set import ChunkBatchSampler, TrainingSet


class JumpNet(nn.Module):
    """Image (uint8 HWC) -> (jump logit, hold in seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.jump, self.hold = nn.Linear(32, 1), nn.Linear(32, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(image.permute(0, 3, 1, 2).float() / 255)
        return self.jump(x).squeeze(1), self.hold(x).squeeze(1)


def loss_of(model: JumpNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    jump, hold = model(batch["image"])
    label, weight = batch["label"], batch["weight"]
    jump_loss = (nn.functional.binary_cross_entropy_with_logits(jump, label, reduction="none") * weight).mean()
    positive = label > 0.5
    hold_loss = nn.functional.mse_loss(hold[positive], batch["hold"][positive]) if positive.any() else 0.0
    return jump_loss + hold_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a built set: DIR/dataset.zarr (or .h5, columnar .npz)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train = TrainingSet(args.dataset, split="train")
    # a batch read at a time (set[indices]: one array per field), which the loader makes tensors of as they are
    sampler = ChunkBatchSampler(train, seed=args.seed, workers=max(args.workers, 1), batch_size=args.batch_size)
    loader = torch.utils.data.DataLoader(train, batch_size=None, sampler=sampler,
                                         num_workers=args.workers, persistent_workers=args.workers > 0)
    model = JumpNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    step, epoch = 0, 0
    while step < args.steps:
        sampler.set_epoch(epoch)
        for batch in loader:
            loss = loss_of(model, batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            print(f"step {step} loss {loss.item():.4f}", flush=True)
            if step == args.steps:
                break
        epoch += 1

    if "val" in train.split_sizes():
        val = TrainingSet(args.dataset, split="val")
        correct = total = 0
        with torch.no_grad():
            for batch in torch.utils.data.DataLoader(val, batch_size=args.batch_size):
                jump, _ = model(batch["image"])
                correct += int(((jump > 0) == (batch["label"] > 0.5)).sum())
                total += len(jump)
        print(f"validation accuracy {correct / total:.3f} on {total} samples")
    else:
        print("no validation split (build with --val-fraction to get one)")


if __name__ == "__main__":
    main()
