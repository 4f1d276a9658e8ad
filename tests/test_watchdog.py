"""ar.watchdog against real process trees.

Every run_watched call happens in a fresh supervisor subprocess (processes.HELPER), so pytest
itself never becomes a subreaper and keeps its signal handlers. Processes under test record their
pids in files; afterwards each of them must be gone (no such process, or a zombie).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from processes import (PY, TAG, assert_all_gone, finish, hung_mount, spec, start_supervisor, supervise,
                       wait_until, write_script)

from ar.watchdog import tagged_pids

# Parent, 2 children, 4 grandchildren; all ignore SIGTERM.
TREE = """
import os, signal, sys, time
out = sys.argv[1]
signal.signal(signal.SIGTERM, signal.SIG_IGN)

def note():
    open(os.path.join(out, str(os.getpid())), "w").close()

def spawn(level):
    for _ in range(2):
        if os.fork() == 0:
            note()
            if level < 2:
                spawn(level + 1)
            while True:
                time.sleep(1)

note()
spawn(1)
while True:
    time.sleep(1)
"""

# A child that leaves the session, and a double-forked orphan whose parent has exited; both ignore
# SIGTERM. argv[2] == "exit": the main process exits 0 once both are up, else it sleeps forever.
ESCAPEES = """
import os, signal, sys, time
out, mode = sys.argv[1], sys.argv[2]

def note(name):
    with open(os.path.join(out, name + ".tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name))

def linger(name):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    note(name)
    while True:
        time.sleep(1)

if os.fork() == 0:
    os.setsid()
    linger("setsid")
middle = os.fork()
if middle == 0:
    if os.fork() == 0:
        while os.getppid() == middle:  # wait to be orphaned
            time.sleep(0.005)
        linger("orphan")
    os._exit(0)
os.waitpid(middle, 0)
while not all(os.path.exists(os.path.join(out, n)) for n in ("setsid", "orphan")):
    time.sleep(0.01)
if mode == "exit":
    sys.exit(0)
while True:
    time.sleep(1)
"""



def recorded_pids(directory: Path) -> list[int]:
    """Pids recorded in directory: files named by a pid, or named files holding one."""
    pids = []
    for path in directory.iterdir():
        if path.name.isdigit():
            pids.append(int(path.name))
        elif not path.name.endswith(".tmp"):
            pids.append(int(path.read_text()))
    return pids


@pytest.fixture
def pid_dir(tmp_path: Path) -> Path:
    path = tmp_path / "pids"
    path.mkdir()
    return path


def test_exit_status_log_stdin_and_env(tmp_path: Path) -> None:
    probe = write_script(tmp_path, "probe.py", (
        "import json, os, sys\n"
        "print('to stdout', flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\n"
        "print('stdin', repr(sys.stdin.read()), os.readlink('/proc/self/fd/0'), flush=True)\n"
        # The initial environment: Python's own locale coercion may add LC_CTYPE to os.environ.
        "env = open('/proc/self/environ', 'rb').read().decode().split(chr(0))[:-1]\n"
        "print('env', json.dumps(dict(e.split('=', 1) for e in env)), flush=True)\n"
        "sys.exit(int(sys.argv[1]))\n"
    ))
    launch = spec(tmp_path, f"{PY} {probe} 0", extra_env={"AR_TEST_VALUE": "a b=c"})
    result = supervise(tmp_path, launch)
    assert (result["status"], result["exit_code"], result["survivors"], result["swept"]) == ("ok", 0, [], 0)

    log = (tmp_path / "run.log").read_text()
    assert "to stdout\n" in log and "to stderr\n" in log
    assert "stdin '' /dev/null\n" in log
    child_env = json.loads(log.split("env ", 1)[1].splitlines()[0])
    # /bin/sh adds PWD; nothing of the supervisor's own environment leaks in.
    assert {k: v for k, v in child_env.items() if k != "PWD"} == launch["env"]

    launch = spec(tmp_path, f"{PY} {probe} 3")
    result = supervise(tmp_path, launch)
    assert (result["status"], result["exit_code"], result["survivors"]) == ("crash", 3, [])
    assert (tmp_path / "run.log").read_text().count("to stdout\n") == 2  # appended, not truncated


def test_crash_by_signal(tmp_path: Path) -> None:
    result = supervise(tmp_path, spec(tmp_path, "kill -SEGV $$"))
    assert (result["status"], result["exit_code"]) == ("crash", -signal.SIGSEGV)


def test_timeout_kills_tree_that_ignores_sigterm(tmp_path: Path, pid_dir: Path) -> None:
    tree = write_script(tmp_path, "tree.py", TREE)
    seconds, grace = 1.0, 2.0
    started = time.monotonic()
    result = supervise(tmp_path, spec(tmp_path, f"exec {PY} {tree} {pid_dir}", seconds, grace))
    elapsed = time.monotonic() - started

    pids = recorded_pids(pid_dir)
    assert len(pids) == 7
    assert (result["status"], result["exit_code"], result["survivors"]) == ("timeout", -signal.SIGKILL, [])
    # SIGTERM at the deadline; nobody obeys it, so the whole grace is spent before SIGKILL.
    assert seconds <= result["wall_seconds"] < seconds + grace <= elapsed
    assert_all_gone(pids)


@pytest.mark.parametrize("mode", ["timeout", "exit"])
def test_setsid_descendant_and_orphan_are_killed(tmp_path: Path, pid_dir: Path, mode: str) -> None:
    escapees = write_script(tmp_path, "escapees.py", ESCAPEES)
    result = supervise(tmp_path, spec(tmp_path, f"{PY} {escapees} {pid_dir} {mode}", 1.0, 1.0))

    setsid_pid = int((pid_dir / "setsid").read_text())
    orphan_pid = int((pid_dir / "orphan").read_text())
    assert result["survivors"] == []
    if mode == "exit":
        assert (result["status"], result["exit_code"]) == ("ok", 0)
        assert result["swept"] >= 2
    else:
        assert result["status"] == "timeout"
    assert_all_gone([setsid_pid, orphan_pid])


def test_tagged_process_outside_the_tree_is_swept(tmp_path: Path) -> None:
    launch = spec(tmp_path, "exit 0")
    run_dir = launch["env"][TAG]
    # Started by pytest in its own session: neither a descendant of the supervisor nor in the run's
    # session, like an orphan re-parented to init. Only the tag ties it to the run.
    stray = subprocess.Popen(["sleep", "60"], env=launch["env"], start_new_session=True)
    near_miss = subprocess.Popen(["sleep", "60"], env={TAG: run_dir + "x"}, start_new_session=True)
    try:
        assert wait_until(lambda: stray.pid in tagged_pids((TAG, run_dir)))
        assert near_miss.pid not in tagged_pids((TAG, run_dir))
        # The caller itself carries the tag but is never listed.
        check_self = ("import os; from ar.watchdog import tagged_pids; "
                      f"print(os.getpid() in tagged_pids(({TAG!r}, {run_dir!r})))")
        listed = subprocess.run([PY, "-c", check_self], env={**os.environ, TAG: run_dir},
                                capture_output=True, text=True, check=True).stdout
        assert listed == "False\n"

        result = supervise(tmp_path, launch)
        assert (result["status"], result["swept"]) == ("ok", 1)
        assert stray.wait(timeout=5) == -signal.SIGTERM
        assert near_miss.poll() is None
    finally:
        for proc in (stray, near_miss):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_supervisor_interrupts_run(tmp_path: Path, pid_dir: Path, sig: signal.Signals) -> None:
    tree = write_script(tmp_path, "tree.py", TREE)
    supervisor = start_supervisor(tmp_path, spec(tmp_path, f"exec {PY} {tree} {pid_dir}", 30.0, 0.5))
    try:
        assert wait_until(lambda: len(list(pid_dir.iterdir())) == 7)
        supervisor.send_signal(sig)
        result = finish(supervisor)
    finally:
        supervisor.kill()
    assert (result["status"], result["survivors"]) == ("interrupted", [])
    assert result["wall_seconds"] < 30  # the signal ended it, not the deadline
    assert_all_gone(recorded_pids(pid_dir))


@pytest.mark.parametrize("no_pidfd", [False, True])
def test_exit_is_detected_without_polling_delay(tmp_path: Path, no_pidfd: bool) -> None:
    """The exit (the pidfd, or the short poll without one) ends the wait, not the next sample: with
    samples 20 s apart, a run that ends sooner was noticed by its exit. An ordering, not a
    duration; bench/bench_exit.py measures the latency."""
    ticks = {"_SAMPLE_SECONDS": 20.0}
    for command, lasts in (("exit 0", 0.0), ("sleep 0.3", 0.3)):
        result = supervise(tmp_path, {**spec(tmp_path, command, 60.0), "no_pidfd": no_pidfd, "knobs": ticks})
        assert result["status"] == "ok"
        assert lasts <= result["wall_seconds"] < 20


def test_unkillable_process_is_reported_unclean(tmp_path: Path, pid_dir: Path) -> None:
    stuck_file = pid_dir / "stuck"
    with hung_mount(tmp_path) as mount:
        mountpoint = mount.path
        # The shell records its pid, then becomes cat, which blocks on the mount in D state.
        command = f"echo $$ > {shlex.quote(str(stuck_file))}; exec cat {shlex.quote(str(mountpoint / 'x'))}"
        result = supervise(tmp_path, spec(tmp_path, command, 0.5, 0.5))
        stuck = int(stuck_file.read_text())

        assert result["status"] == "unclean"
        assert result["survivors"] == result["spawned"] == [stuck]
        assert result["exit_code"] is None
        assert psutil.Process(stuck).status() == psutil.STATUS_DISK_SLEEP
    assert_all_gone([stuck])


# A daemon hopping through a fork chain: each link forks, the child calls setsid and records its
# pid, the parent exits; SIGTERM ignored, no AR_* tag (an empty environment), a new link every few
# ms. argv[2] == "exit": the main process exits 0 once the chain runs, else it sleeps forever.
FORK_CHAIN = """
import os, signal, sys, time
out, mode = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    os.environ.clear()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        if os.fork():
            os._exit(0)
        os.setsid()
        open(os.path.join(out, str(os.getpid())), "w").close()
        time.sleep(0.002)
while len(os.listdir(out)) < 20:
    time.sleep(0.005)
if mode != "exit":
    while True:
        time.sleep(1)
"""


def assert_no_new_links(pid_dir: Path) -> None:
    """The chain is dead: its last link is gone and no new one appears."""
    links = sorted(int(name) for name in os.listdir(pid_dir))
    time.sleep(0.3)
    assert sorted(int(name) for name in os.listdir(pid_dir)) == links, "the chain is still forking"
    assert_all_gone(links[-5:])


@pytest.mark.parametrize("mode", ["exit", "timeout"])
def test_a_fork_chain_that_ignores_sigterm_is_ended(tmp_path: Path, pid_dir: Path, mode: str) -> None:
    chain = write_script(tmp_path, "chain.py", FORK_CHAIN)
    result = supervise(tmp_path, spec(tmp_path, f"exec {PY} {chain} {pid_dir} {mode}", 1.5, 0.5))
    assert result["status"] == ("ok" if mode == "exit" else "timeout"), result
    assert result["survivors"] == []
    assert_no_new_links(pid_dir)


def test_a_daemon_made_in_the_first_instant_does_not_escape(tmp_path: Path, pid_dir: Path) -> None:
    """A runner whose first act is an env-less, detached daemon: it must come back to the
    supervisor (a subreaper before the child exists), not to init. Several tries, since on the
    old order it escaped only when it won the race against the subreaper call."""
    daemon = f"env -i setsid -f /bin/sh -c 'echo $$ > {pid_dir}/daemon.$$; trap \"\" TERM; exec sleep 300'"
    for _ in range(6):
        result = supervise(tmp_path, spec(tmp_path, f"{daemon}; sleep 0.3; exit 0", 20.0, 0.5))
        assert result["status"] == "ok" and result["survivors"] == []
    pids = [int(p.read_text()) for p in pid_dir.iterdir()]
    assert len(pids) == 6
    assert_all_gone(pids)
