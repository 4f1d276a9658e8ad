"""Train a small MLP regressor. Configured with Hydra, logged to TensorBoard."""
import logging
import os

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from hydraproj.data import make_loaders
from hydraproj.model import MLP, build_optimizer

log = logging.getLogger(__name__)


def evaluate(model, loader, loss_fn):
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            total += loss_fn(model(x), y).item() * len(x)
            n += len(x)
    model.train()
    return total / n


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    log.info("config:\n%s", OmegaConf.to_yaml(cfg))

    train_loader, val_loader = make_loaders(cfg, cfg.seed)
    model = MLP(cfg.data.n_features, cfg.model.hidden, cfg.model.depth, cfg.model.activation)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    loss_fn = nn.MSELoss()

    writer = SummaryWriter(log_dir=cfg.tb_dir)
    os.makedirs(os.path.dirname(cfg.ckpt_path), exist_ok=True)
    best = float("inf")
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        running = 0.0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item()
            step += 1
        train_loss = running / len(train_loader)
        val_loss = evaluate(model, val_loader, loss_fn)
        writer.add_scalar("train_loss", train_loss, epoch)
        writer.add_scalar("val_loss", val_loss, epoch)
        writer.flush()
        if val_loss < best:
            best = val_loss
            torch.save(
                {"epoch": epoch, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "val_loss": val_loss},
                cfg.ckpt_path,
            )
        log.info("epoch %d step %d train_loss=%.5f val_loss=%.5f", epoch, step, train_loss, val_loss)

    writer.close()
    log.info("best val_loss=%.5f (checkpoint: %s)", best, cfg.ckpt_path)
    return best


if __name__ == "__main__":
    main()
