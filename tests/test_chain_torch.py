"""A three-link chain with a real PyTorch training program (CPU): every child starts from its
parent's best weights, so its baseline beats its parent's baseline."""

from __future__ import annotations

import json
from pathlib import Path


from conftest import Project, make_project, run_python

TRAIN = """
import os
from pathlib import Path

import torch

from prepare import load_data

EPOCHS = {epochs}
LEARNING_RATE = 0.05

torch.manual_seed(0)
train, val = load_data()
x_train = torch.tensor([x for x, _ in train]); y_train = torch.tensor([[y] for _, y in train])
x_val = torch.tensor([x for x, _ in val]); y_val = torch.tensor([[y] for _, y in val])
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
parent = os.environ.get("AR_PARENT_CKPT")
if parent:
    weights = Path(parent) / "model.pt" if Path(parent).is_dir() else Path(parent)
    model.load_state_dict(torch.load(weights))
    print("loaded parent weights from", weights)
optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
for epoch in range(EPOCHS):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x_train), y_train)
    loss.backward()
    optimizer.step()
with torch.no_grad():
    val_loss = torch.nn.functional.mse_loss(model(x_val), y_val).item()
ckpt = Path(os.environ["AR_CKPT_DIR"])
ckpt.mkdir(parents=True, exist_ok=True)
torch.save(model.state_dict(), ckpt / "model.pt")
print(f"val_loss={{val_loss:.6f}}")
"""


def run_ok(project: Project, slug: str, epochs: int, note: str) -> dict:
    (project.root / ".autoresearch" / slug / "train.py").write_text(f"RUN_NOTE = {note!r}\n" + TRAIN.format(epochs=epochs))
    done = project.ar("run", "--expr", slug, timeout=300)
    assert done.returncode in (0, 4), done.stdout + done.stderr
    run_id = done.stdout.split()[1].rstrip(":")
    return json.loads((project.root / ".autoresearch" / slug / "runs" / run_id / "result.json").read_text())


def baseline_value(project: Project, slug: str) -> float:
    return json.loads(project.ar("status", "--json", "--expr", slug, check=True).stdout)["baseline"]["value"]


def test_three_link_chain_each_child_starts_from_its_parents_weights(tmp_path: Path, torch_python: Path) -> None:
    project = make_project(tmp_path / "proj", "--runner", f"{torch_python} {{train_py}}", slug="link1")
    project.ar("session", "--chain-mode", "max_n", "--chain-max", "2", "--max-runs", "2", check=True)
    first = run_ok(project, "link1", 20, "baseline from scratch")
    assert first["verdict"] == "advance" and first["checkpoint"]
    run_ok(project, "link1", 40, "more epochs")
    parent = "link1"
    for child in ("link2", "link3"):
        done = project.ar(
            "chain-init", "--from-expr", parent, "--new-slug", child, "--goal", f"continue {parent} from its best weights",
            "--mutation-scope", "epochs and learning rate", "--primary-metric", "val_loss", "--primary-direction", "min",
            "--rationale", f"{parent} plateaued; fine-tune from its best checkpoint",
        )
        assert done.returncode == 0 and done.stdout.strip() == child, done.stdout + done.stderr
        result = run_ok(project, child, 20, "baseline from the parent's weights")
        log = (project.root / ".autoresearch" / child / "runs" / result["run_id"] / "run.log").read_text()
        assert "loaded parent weights from" in log and f"{parent}/best_ckpt" in log
        assert baseline_value(project, child) < baseline_value(project, parent)
        run_ok(project, child, 30, "a few more epochs")
        parent = child
    chain = json.loads((project.root / ".autoresearch" / ".chain-session.json").read_text())
    assert chain["current_slug"] == "link3" and chain["chain_trail"] == ["link1", "link2", "link3"]
    assert chain["chain_remaining"] == 0
    # the promoted weights of the last link load back into the same architecture
    best = json.loads((project.root / ".autoresearch" / "link3" / "best.json").read_text())
    weights = project.root / ".autoresearch" / "link3" / best["checkpoint"]
    weights = weights / "model.pt" if weights.is_dir() else weights
    keys = run_python(torch_python, "import sys, torch; print(sorted(torch.load(sys.argv[1])))", str(weights))
    assert keys.strip() == str(sorted(["0.weight", "0.bias", "2.weight", "2.bias"]))
