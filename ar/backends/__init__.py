"""Where a run's training command can run besides a local process tree (ar.watchdog)."""
