"""Frozen part of experiment __SLUG__: read-only during the loop (`ar run` refuses to run once
this file has changed). train.py drives the host project's own code, which keeps its data and
evaluation; a custom metric backend's extract_metrics(run_dir, log_tail) lives here.
"""
