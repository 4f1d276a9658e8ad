#!/usr/bin/env python3
"""Runs the autoresearch helper: `uv run python .autoresearch/ar.py <command> ...`.

Started with the project's own interpreter, which need not have ar's dependencies, it hands
over (exec, so the exit code passes through) to the interpreter ar was installed with. It
never installs anything into the project's environment. When that interpreter is gone (the
plugin was updated, a clone moved), it finds the runtime again and ar rewrites this file.
"""

import json
import os
import shutil
import sys

AR_PYTHON = __AR_PYTHON__  # the interpreter that has ar and its dependencies
AR_SOURCE = __AR_SOURCE__  # ar's project directory, for `uv run --project` if that interpreter is gone
PLUGIN = "autoresearch@"  # how Claude Code names this plugin in installed_plugins.json


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, AR_PROJECT_ROOT=root, AR_PROJECT_PYTHON=sys.executable)
    args = sys.argv[1:]
    usable = os.access(AR_PYTHON, os.X_OK)
    plugins = plugin_installs() if not usable or in_plugin_cache(AR_SOURCE) else []
    # After a plugin update, follow the plugin to its current install once that has a runtime
    # environment (built by the setup skill's first call); until then the old one still works.
    newer = plugins[0] if plugins and os.path.realpath(plugins[0]) != os.path.realpath(AR_SOURCE) else None
    if usable and not (newer and os.access(os.path.join(newer, ".venv", "bin", "python"), os.X_OK)):
        os.execve(AR_PYTHON, [AR_PYTHON, "-m", "ar", *args], env)
    env["AR_SHIM_HEAL"] = "1"  # ar rewrites this file for the runtime found below
    for command in runtimes(plugins):
        os.execve(command[0], [*command, *args], env)
    sys.stderr.write(
        f"ar: cannot find the autoresearch runtime (it was {AR_PYTHON}) (fix: install the plugin or "
        "`uv tool install` autoresearch, then run `autoresearch shim` in the project root, or "
        "`uv run --project <your autoresearch clone> autoresearch shim`)\n"
    )
    sys.exit(1)


def in_plugin_cache(path: str) -> bool:
    return os.sep + os.path.join("plugins", "cache") + os.sep in path


def plugin_installs() -> list:
    """Install paths of this plugin that Claude Code records, newest first."""
    config = os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".claude")
    try:
        with open(os.path.join(config, "plugins", "installed_plugins.json"), encoding="utf-8") as f:
            plugins = json.load(f)["plugins"]
        entries = [e for name, found in plugins.items() if name.startswith(PLUGIN) for e in found]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    entries.sort(key=lambda e: str(e.get("lastUpdated", "")), reverse=True)
    return [str(e["installPath"]) for e in entries if isinstance(e, dict) and e.get("installPath")]


def runtimes(plugins: list):
    """Commands that start ar, best first: the current plugin install, the recorded source, a tool install."""
    uv = shutil.which("uv")
    for source in [*plugins, AR_SOURCE]:
        if uv and os.path.isfile(os.path.join(source, "pyproject.toml")) and os.path.isdir(os.path.join(source, "ar")):
            yield [uv, "run", "--quiet", "--no-dev", "--project", source, "python", "-m", "ar"]
    script = shutil.which("autoresearch")
    if script:
        yield [script]


if __name__ == "__main__":
    main()
