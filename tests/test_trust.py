"""Verdicts you can trust: the mutation budget and the diff size of every run (real `ar run`s on
real train.py diffs)."""

from __future__ import annotations

from pathlib import Path

from conftest import Project, make_project
from test_bad_inputs import assert_one_line_error


def test_every_row_and_result_carries_the_diff_against_the_train_py_it_started_from(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.ar("run", check=True)
    project.ar("run", "--set", "LEARNING_RATE=0.05", "--note", "lr", check=True)  # advances: the knob and RUN_NOTE, +2 -2 against r0001
    text = project.train_py.read_text()
    project.train_py.write_text(text.replace("RUN_NOTE = 'lr'", "RUN_NOTE = 'two lines'") + "X = 1\nY = 2\n")
    project.ar("run", check=True)
    assert [project.result(r)["diff"] for r in ("r0001", "r0002", "r0003")] == ["+0 -0", "+2 -2", "+3 -1"]
    assert [row[-1] for row in project.rows()] == ["+0 -0", "+2 -2", "+3 -1"]


def test_a_train_py_over_the_mutation_budget_is_refused_before_launch(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.ar("session", "--max-changed-lines", "2", check=True)
    project.ar("run", check=True)  # the first run is the baseline: never measured against a template
    edited = project.train_py.read_text() + "A = 1\nB = 2\nC = 3\n"
    project.train_py.write_text(edited)
    line = assert_one_line_error(project.ar("run"), "3 lines", "+3 -0", "r0001", "mutation budget is 2")
    assert "--max-changed-lines" in line
    assert len(project.rows()) == 1 and not (project.expr / "runs" / "r0002").exists()
    assert project.train_py.read_text() == edited  # nothing lost: the agent trims its own edit
    project.train_py.write_text(edited.replace("C = 3\n", ""))
    assert project.ar("run").returncode == 0
    project.ar("session", "--max-changed-lines", "0", check=True)  # lifted
    project.train_py.write_text(project.train_py.read_text() + "".join(f"V{i} = {i}\n" for i in range(9)))
    assert project.ar("run").returncode == 0
    assert Project(tmp_path).result("r0003")["diff"] == "+9 -0"


def _program(value: str, extra_lines: int = 0) -> str:
    padding = "".join(f"unused_{i} = {i}\n" for i in range(extra_lines))
    return f"{padding}# a comment line is not code\n\nprint('val_loss={value}')\n"


def test_prefer_simpler_advances_a_smaller_train_py_within_the_noise_floor(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.ar("session", "--min-delta", "0.01", "--prefer-simpler", "on", check=True)
    project.write_train(_program("1.000", extra_lines=5), "baseline with dead code")
    project.ar("run", check=True)
    project.write_train(_program("1.005", extra_lines=2), "drop dead code")  # 0.005 worse: within the floor, 3 lines fewer
    done = project.ar("run", check=True)
    assert "ok/advance | kept | simpler at equal metric" in done.stdout, done.stdout
    assert project.result("r0002")["improved_over_best"] is False and project.best()["run_id"] == "r0002"
    project.write_train(_program("1.016", extra_lines=0), "smaller but worse")  # 0.011 worse than r0002: beyond the floor
    assert "ok/revert" in project.ar("run", check=True).stdout
    project.write_train(_program("1.005", extra_lines=4), "equal but bigger")  # a bigger train.py needs a real gain
    assert "ok/revert" in project.ar("run", check=True).stdout
    project.ar("session", "--prefer-simpler", "off", check=True)
    project.write_train(_program("1.005", extra_lines=0), "smaller, rule off")
    assert "ok/revert" in project.ar("run", check=True).stdout


def test_seconds_auto_is_twice_the_baseline_wall_time_under_the_cap(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.ar("session", "--seconds", "40", check=True)
    project.ar("session", "--seconds", "auto", check=True)
    status = __import__("json").loads(project.ar("status", "--json", check=True).stdout)
    assert status["seconds"] == 40 and status["seconds_auto"] is True  # no baseline yet: the cap
    project.write_train("import time\ntime.sleep(1.2)\nprint('val_loss=1')\n", "baseline")
    project.ar("run", check=True)
    wall = project.result("r0001")["wall_seconds"]
    status = __import__("json").loads(project.ar("status", "--json", check=True).stdout)
    expected = min(40, max(1, -(-2 * wall // 1)))
    assert status["seconds"] == expected and "auto: 2x the baseline" in project.ar("status", check=True).stdout
    project.write_train("import time\ntime.sleep(60)\nprint('val_loss=0.5')\n", "hang")
    done = project.ar("run", timeout=90)
    assert "timeout" in done.stdout, done.stdout
    assert project.result("r0002")["seconds"] == expected  # killed at twice the baseline, not at 40 s


# A metric with a known truth and seed noise: true_value(LR) + gauss(0, SIGMA) seeded by AR_SEED (a new
# seed every run under repeats or confirmation, the run's number; without them the run's number too, as a
# training whose seed is not fixed would differ run to run). The counts below are fixed, not random.
NOISY = """\
RUN_NOTE = {note!r}
LR = {lr}
import os, random
noise = random.Random(int(os.environ.get("AR_SEED") or os.environ["AR_RUN_ID"][1:])).gauss(0, 0.05)
print(f"val_loss={{(LR - 0.3) ** 2 * 10 + 1 + noise}}")
"""


def _noisy(project, lr: float, note: str) -> None:
    project.train_py.write_text(NOISY.format(lr=lr, note=note))


def test_baseline_repeats_measure_the_noise_and_raise_the_floor(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.ar("session", "--baseline-repeats", "3", check=True)
    _noisy(project, 0.3, "baseline")
    done = project.ar("run", check=True)  # one call: the baseline and its two repeats
    assert "baseline repeat 3/3" in done.stdout and "mean" in done.stdout, done.stdout
    values = [project.result(r)["primary"]["value"] for r in ("r0001", "r0002", "r0003")]
    best = project.best()
    assert best["run_id"] == "r0003" and best["n"] == 3 and abs(best["value"] - sum(values) / 3) < 1e-12
    import statistics

    assert abs(best["noise"]["sigma"] - statistics.stdev(values)) < 1e-12 and best["noise"]["n"] == 3
    assert [row[9] for row in project.rows()] == ["baseline", "baseline [repeat 2/3]", "baseline [repeat 3/3]"]
    assert len({(project.expr / "runs" / r / "train.py").read_text() for r in ("r0001", "r0002", "r0003")}) == 1
    assert "baseline repeat 3/3" in project.ar("wait", check=True).stdout  # re-attaching shows the series' end
    status = __import__("json").loads(project.ar("status", "--json", check=True).stdout)
    assert status["noise"]["sigma"] == best["noise"]["sigma"]
    assert "2x sigma" in project.ar("status", check=True).stdout


def _advances_of_null_edits(tmp_path: Path, rules: bool, edits: int = 16) -> int:
    project = make_project(tmp_path)
    project.ar("session", "--max-failures", "100", *(("--baseline-repeats", "3") if rules else ()), check=True)
    _noisy(project, 0.3, "baseline")
    project.ar("run", check=True)
    first = len(project.rows())
    for i in range(edits):
        _noisy(project, 0.3, f"null edit {i}")  # the same code: only the seed differs
        project.ar("run", check=True)
    return sum(row[4] == "advance" for row in project.rows()[first:])


def test_noise_rules_stop_null_edits_from_advancing_but_not_real_gains(tmp_path: Path) -> None:
    without = _advances_of_null_edits(tmp_path / "off", rules=False)
    with_rules = _advances_of_null_edits(tmp_path / "on", rules=True)
    assert with_rules <= 1 and without >= 3 * max(with_rules, 1), (without, with_rules)  # seed luck advanced without the rules
    project = Project(tmp_path / "on")
    _noisy(project, 0.35, "worse lr: the baseline is at the optimum")  # +0.025 true loss: below 2 sigma
    project.ar("run", check=True)
    project.ar("session", "--noise-k", "1", check=True)
    project.train_py.write_text(NOISY.format(lr=0.3, note="real gain").replace("+ 1 + noise", "+ 0.75 + noise"))
    assert "ok/advance" in project.ar("run", check=True).stdout  # 0.25 better: 5 sigma, well above the floor


def test_confirmation_re_runs_an_apparent_gain_and_advances_only_on_the_mean(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.ar("session", "--baseline-repeats", "3", "--confirm", "2", "--max-failures", "100", check=True)
    _noisy(project, 0.3, "baseline")
    project.ar("run", check=True)
    verdicts = []
    for i in range(8):  # null edits: a lucky seed may look like a gain; its confirmations bring the mean back
        _noisy(project, 0.3, f"null {i}")
        verdicts.append(project.ar("run", check=True).stdout.splitlines()[-1])
    assert not any("ok/advance" in v for v in verdicts), verdicts
    assert any("not confirmed: mean" in v for v in verdicts), verdicts  # the sequence holds lucky candidates
    rows = project.rows()
    candidates = [r for r in rows if r[9].endswith("[candidate]")]
    assert candidates and all(r[4] == "revert" for r in candidates)
    project.train_py.write_text(NOISY.format(lr=0.3, note="real gain").replace("+ 1 + noise", "+ 0.7 + noise"))
    done = project.ar("run", check=True)
    assert "confirmed 2/2: mean" in done.stdout and "ok/advance" in done.stdout, done.stdout
    best = project.best()
    last = project.rows()[-3:]
    assert [r[9] for r in last] == ["real gain [candidate]", f"real gain [confirm 1/2 of {last[0][0]}]", f"real gain [confirm 2/2 of {last[0][0]}]"]
    assert best["run_id"] == last[-1][0] and best["n"] == 3
    assert abs(best["value"] - sum(float(r[6]) for r in last) / 3) < 1e-9  # the mean of its runs
    assert "+ 0.7 + noise" in project.train_py.read_text()  # train.py is the confirmed candidate's
