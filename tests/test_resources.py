"""Resource use that ar.watchdog measures over a run's whole process tree: peak RSS and peak GPU memory.

Each run happens in a fresh supervisor subprocess (processes.HELPER), as in test_watchdog.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from processes import PY, gone, spec, supervise, wait_until, write_script

MIB = 1 << 20

# argv[1] MiB, touched page by page, in this process and in a forked child at once; both hold it for
# argv[2] seconds. Run with exec, so the two are the run's main child and its grandchild.
HOLD = """
import os, sys, time
mib, seconds = int(sys.argv[1]), float(sys.argv[2])
child = os.fork()
data = bytearray(mib << 20)
data[::4096] = b"\\1" * (len(data) // 4096)  # one write per page makes every page resident
time.sleep(seconds)
if child:
    os.waitpid(child, 0)
"""

# 200 MiB for 50 ms, then exit.
SPIKE = """
import time
data = bytearray(200 << 20)
data[::4096] = b"\\1" * (len(data) // 4096)
time.sleep(0.05)
"""

# Stand-in for NVIDIA's nvidia-smi, which this machine does not have (no GPU): answers only the query
# that ar.watchdog makes, with the "pid, used_memory" lines that processes left in $FAKE_GPU_DIR.
# Every call is counted in $FAKE_GPU_CALLS.
FAKE_NVIDIA_SMI = """#!/bin/sh
[ "$*" = "--query-compute-apps=pid,used_memory --format=csv,noheader,nounits" ] || exit 2
echo "$$" >> "$FAKE_GPU_CALLS"
cat "$FAKE_GPU_DIR"/* 2>/dev/null
exit 0
"""

# The run's two processes (main child and its grandchild) "use" GPU memory by writing what
# nvidia-smi should list for them: 300 + 200 MiB for a second, then 100 + 50 MiB.
GPU_RUN = """
import os, sys, time
gpu_dir = sys.argv[1]

def use(mib):
    tmp = os.path.join(gpu_dir, "." + str(os.getpid()))
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}, {mib}\\n")
    os.rename(tmp, os.path.join(gpu_dir, str(os.getpid())))

child = os.fork()
use(300 if child else 200)
time.sleep(1.0)
use(100 if child else 50)
time.sleep(0.4)
if child:
    os.waitpid(child, 0)
"""


def fake_nvidia_smi(tmp_path: Path, script: str = FAKE_NVIDIA_SMI) -> dict[str, str]:
    """Puts an executable named nvidia-smi first on PATH; returns the supervisor's environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_script(bin_dir, "nvidia-smi", script).chmod(0o755)
    gpu_dir = tmp_path / "gpu"
    gpu_dir.mkdir()
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_GPU_DIR": str(gpu_dir),
            "FAKE_GPU_CALLS": str(tmp_path / "calls")}


def without_nvidia_smi() -> dict[str, str]:
    """The supervisor's PATH minus any directory holding an nvidia-smi (there is none here)."""
    keep = [d for d in os.environ["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(d, "nvidia-smi"))]
    return {"PATH": os.pathsep.join(keep)}


def test_peak_rss_sums_the_tree(tmp_path: Path) -> None:
    hold = write_script(tmp_path, "hold.py", HOLD)
    result = supervise(tmp_path, spec(tmp_path, f"exec {PY} {hold} 150 0.6"), without_nvidia_smi())
    assert result["status"] == "ok"
    # Two processes of 150 MiB each at once; the floor from the largest reaped child alone is ~160.
    assert 280 <= result["peak_rss_mb"] < 400
    assert result["peak_gpu_mb"] is None


def test_trivial_run_is_small(tmp_path: Path) -> None:
    result = supervise(tmp_path, spec(tmp_path, "exit 0"), without_nvidia_smi())
    assert result["status"] == "ok"
    assert 0 < result["peak_rss_mb"] < 50
    assert result["peak_gpu_mb"] is None


def test_short_spike_between_samples_is_not_missed(tmp_path: Path) -> None:
    spike = write_script(tmp_path, "spike.py", SPIKE)
    # No periodic sample at all, and the spike is in a grandchild (reaped by the shell, not by the
    # supervisor) that is gone before the final look: only the RUSAGE_CHILDREN floor can see it.
    launch = {**spec(tmp_path, f"{PY} {spike}; exit 0"), "knobs": {"_SAMPLE_SECONDS": 1000.0}}
    result = supervise(tmp_path, launch)
    assert result["status"] == "ok"
    assert result["peak_rss_mb"] >= 195


def test_gpu_memory_of_the_run_from_nvidia_smi(tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path)
    gpu_dir = Path(env["FAKE_GPU_DIR"])
    # Not the run's: pytest itself, using a lot; and lines that are no record.
    (gpu_dir / "others").write_text(f"{os.getpid()}, 7777\nNo running processes found\n\n")
    run = write_script(tmp_path, "gpu_run.py", GPU_RUN)
    launch = {**spec(tmp_path, f"exec {PY} {run} {gpu_dir}"), "knobs": {"_GPU_SECONDS": 0.05}}
    result = supervise(tmp_path, launch, env)
    assert result["status"] == "ok"
    assert result["peak_gpu_mb"] == 500.0  # the highest sum, not the last one (150), nor pytest's
    assert len(Path(env["FAKE_GPU_CALLS"]).read_text().split()) >= 10


def test_failing_nvidia_smi_leaves_gpu_unknown(tmp_path: Path) -> None:
    env = fake_nvidia_smi(tmp_path, "#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n")
    launch = {**spec(tmp_path, "sleep 0.3"), "knobs": {"_GPU_SECONDS": 0.05}}
    result = supervise(tmp_path, launch, env)
    assert result["status"] == "ok"
    assert result["peak_gpu_mb"] is None


def test_exit_is_detected_at_once_with_sampling_and_a_hung_nvidia_smi(tmp_path: Path) -> None:
    """Orderings, not durations (the machine may be loaded): a wait that missed the exit would
    last until the next sample tick or the hung query, which are made far longer than the run.
    bench/bench_exit.py measures the latency itself."""
    ticks = {"_SAMPLE_SECONDS": 20.0}
    result = supervise(tmp_path, {**spec(tmp_path, "sleep 0.3", 60.0), "knobs": ticks}, without_nvidia_smi())
    assert result["status"] == "ok"
    assert 0.3 <= result["wall_seconds"] < 20  # ended by the exit, before the first sample tick
    # Exits just after a periodic sample: the next wait still ends on the exit, not on a tick.
    every_2s = {"_SAMPLE_SECONDS": 2.0}
    result = supervise(tmp_path, {**spec(tmp_path, "sleep 2.4", 60.0), "knobs": every_2s}, without_nvidia_smi())
    assert 2.4 <= result["wall_seconds"] < 4.0  # the second tick would be at 4.0

    # An nvidia-smi that never answers: the run still ends on its exit, and the query is killed.
    env = fake_nvidia_smi(tmp_path, '#!/bin/sh\necho "$$" >> "$FAKE_GPU_CALLS"\nexec sleep 60\n')
    result = supervise(tmp_path, spec(tmp_path, "sleep 0.5", 60.0), env)
    assert result["status"] == "ok"
    assert 0.5 <= result["wall_seconds"] < 20 and result["elapsed"] < 20  # the query would end at 60
    assert result["peak_gpu_mb"] is None
    hung = [int(pid) for pid in Path(env["FAKE_GPU_CALLS"]).read_text().split()]
    assert len(hung) == 1
    assert wait_until(lambda: gone(hung[0]), 2.0)
