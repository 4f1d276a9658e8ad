"""Data-parallel training of a small MLP classifier on synthetic data.

Launch with torchrun, e.g.:
    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_train.py --lr 0.05
"""
import argparse
import math
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--steps", type=int, default=150, help="optimizer steps")
    p.add_argument("--batch_size", type=int, default=32, help="per-rank batch size")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr_schedule", default="constant", help="constant | cosine | linear")
    p.add_argument("--log_every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt_dir", default="ckpt")
    return p.parse_args()


def make_data(seed, n_train=2048, n_val=512, n_features=20, n_classes=4):
    """Labels come from a fixed random teacher network, so the task is learnable."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(n_features, 32, generator=g) / math.sqrt(n_features)
    w2 = torch.randn(32, n_classes, generator=g) * 2.0

    def sample(n):
        x = torch.randn(n, n_features, generator=g)
        logits = torch.tanh(x @ w1) @ w2
        y = torch.distributions.Categorical(logits=logits).sample()
        return TensorDataset(x, y)

    torch.manual_seed(seed)  # Categorical.sample uses the global RNG
    return sample(n_train), sample(n_val)


def make_scheduler(name, optimizer, total_steps):
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if name == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / total_steps)
    raise ValueError(f"unknown lr_schedule {name!r}; expected constant, cosine or linear")


def evaluate(model, loader, loss_fn):
    """Mean validation loss over all ranks' shards (identical on every rank)."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for x, y in loader:
            totals[0] += loss_fn(model(x), y).item() * len(y)
            totals[1] += len(y)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    model.train()
    return (totals[0] / totals[1]).item()


def main():
    args = parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def log(msg):
        print(f"[rank{rank}] {msg}", flush=True)

    train_ds, val_ds = make_data(args.seed)
    train_sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed)
    val_sampler = DistributedSampler(val_ds, shuffle=False)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=train_sampler)
    val_loader = DataLoader(val_ds, batch_size=256, sampler=val_sampler)

    torch.manual_seed(args.seed)  # same initial weights on every rank
    n_features = train_ds.tensors[0].shape[1]
    model = nn.Sequential(
        nn.Linear(n_features, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, 4),
    )
    model = DDP(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    scheduler = make_scheduler(args.lr_schedule, optimizer, args.steps)
    loss_fn = nn.CrossEntropyLoss()

    log(f"world_size={world} steps={args.steps} lr={args.lr} batch_size={args.batch_size}")
    step, epoch = 0, 0
    while step < args.steps:
        train_sampler.set_epoch(epoch)
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % args.log_every == 0:
                log(f"step {step} loss={loss.item():.4f}")
            if step >= args.steps:
                break
        epoch += 1

    val_loss = evaluate(model, val_loader, loss_fn)
    log(f"val_loss={val_loss:.5f}")

    if rank == 0:
        os.makedirs(args.ckpt_dir, exist_ok=True)
        state = model.module.state_dict()
        torch.save(state, os.path.join(args.ckpt_dir, "model_rank0.pt"))
        torch.save(
            {"step": step, "model": state, "optimizer": optimizer.state_dict(),
             "val_loss": val_loss, "args": vars(args)},
            os.path.join(args.ckpt_dir, "last.pt"),
        )
        log(f"saved checkpoint to {args.ckpt_dir}/")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
