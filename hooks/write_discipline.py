"""PreToolUse hook: while an autoresearch loop is active, the agent may change only the current
experiment's train.py under .autoresearch/ (SPEC §6, references/write-discipline.md).

A loop is active when .autoresearch/.chain-session.json names a current_slug whose experiment
directory exists. Edit, Write, MultiEdit and NotebookEdit are checked by their path (relative
paths against the payload's cwd; `..` and symlinks resolved, so neither walks around the rule);
Bash commands are checked best effort for writes into .autoresearch/ (redirections, tee, cp, mv,
ln, install, rsync, sed -i, perl -i, rm, truncate, dd of=); reading and the shim are never denied.

Claude Code sends the hook payload as JSON on stdin. Exit 0 with no output allows the call; a
denial is exit 0 with {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision":
"deny", "permissionDecisionReason": ...}} on stdout, and the reason is shown to the agent. Any
input this script cannot understand is allowed: a broken hook must never stop the agent.

Standard library only, and fast enough for `python3 -S` before every edit; file names come from
ar/layout.py (plain Python) so that they are named in one place.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the plugin root holds ar/

from ar.layout import STATE_DIR, ExperimentPaths, ProjectPaths

SHIM = "uv run python .autoresearch/ar.py"
PATH_FIELDS = {"Edit": "file_path", "Write": "file_path", "MultiEdit": "file_path", "NotebookEdit": "notebook_path"}

# Bash: tokens that end a simple command, redirections whose next token is a file written, and
# command wrappers skipped to reach the real program.
SEPARATORS = {";", "&", "&&", "|", "||", "|&", ";;", "(", ")", ">(", "<(", "\n"}
WRITE_REDIRECTS = {">", ">>", ">|", "&>", "&>>", "<>", ">&"}
OTHER_REDIRECTS = {"<", "<<", "<<<", "<&"}
WRAPPERS = {"sudo", "env", "command", "builtin", "exec", "nohup", "time", "nice", "stdbuf", "timeout", "xargs"}
KEYWORDS = {"{", "}", "!", "if", "then", "else", "elif", "while", "until", "do"}
CHAIN_SESSION = ProjectPaths(Path("/")).chain_session.name
HEREDOC = re.compile(r"(?<!<)<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def main() -> None:
    try:
        reason = check(json.loads(sys.stdin.read()))
    except Exception:  # malformed payload, or a bug here: allow rather than break the agent
        return
    if reason:
        decision = {"hookEventName": "PreToolUse", "permissionDecision": "deny", "permissionDecisionReason": reason}
        sys.stdout.write(json.dumps({"hookSpecificOutput": decision}) + "\n")


def check(payload: dict) -> str | None:
    """The reason to deny this tool call, or None to allow it."""
    if not isinstance(payload, dict) or payload.get("hook_event_name", "PreToolUse") != "PreToolUse":
        return None
    tool = payload.get("tool_name")
    tool_input = payload.get("tool_input")
    cwd = payload.get("cwd")
    if not isinstance(tool_input, dict):
        return None
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        cwd = os.getcwd()
    if tool in PATH_FIELDS:
        path = tool_input.get(PATH_FIELDS[tool])
        return check_path(path, cwd) if isinstance(path, str) and path else None
    if tool == "Bash" and isinstance(tool_input.get("command"), str):
        for target, where in bash_targets(tool_input["command"], cwd):
            reason = check_path(target, where)
            if reason:
                return reason
    return None


def check_path(path: str, cwd: str) -> str | None:
    """Why writing `path` breaks the write discipline, or None. The path is looked at both as
    written (normalised) and resolved (symlinks), and is denied if either lands under a
    .autoresearch/ whose loop is active anywhere but the current train.py."""
    joined = os.path.join(cwd, os.path.expanduser(path))
    lexical = os.path.normpath(joined)
    real = os.path.realpath(joined)  # symlinks first, then `..`, as the kernel resolves it
    for state_dir in state_dirs(lexical, real, cwd):
        state_real = os.path.realpath(state_dir)
        current = current_slug(state_real)
        if current is None:
            continue
        for inside, base in ((lexical, state_dir), (real, state_real)):
            rel = relative_inside(inside, base)
            if rel is not None and rel != (current, "train.py"):
                return reason_for(os.path.dirname(state_dir), rel, current)
    return None


def state_dirs(lexical: str, real: str, cwd: str) -> list[str]:
    """Every .autoresearch directory the path may lie in: named in the path itself, or the
    project's (nearest to cwd), which also catches a path reaching it through a symlink."""
    found = []
    for path in (lexical, real):
        parts = path.split(os.sep)
        found += [os.sep.join(parts[: i + 1]) for i, part in enumerate(parts) if part == STATE_DIR]
    here = os.path.normpath(cwd)
    while True:
        if os.path.isdir(os.path.join(here, STATE_DIR)):
            found.append(os.path.join(here, STATE_DIR))
            break
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return list(dict.fromkeys(found))


def current_slug(state_dir: str) -> str | None:
    """The current experiment when its loop is active, else None."""
    try:
        with open(os.path.join(state_dir, CHAIN_SESSION)) as f:
            slug = json.load(f).get("current_slug")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(slug, str) and slug and "/" not in slug and os.path.isdir(os.path.join(state_dir, slug)):
        return slug
    return None


def relative_inside(path: str, base: str) -> tuple | None:
    if path == base:
        return (".",)
    if path.startswith(base.rstrip(os.sep) + os.sep):
        return tuple(path[len(base.rstrip(os.sep)) + 1:].split(os.sep))
    return None


def reason_for(root: str, rel: tuple, current: str) -> str:
    """What the agent should do instead of writing .autoresearch/<rel>."""
    shown = os.path.join(STATE_DIR, *rel) if rel != (".",) else STATE_DIR + "/"
    head = (
        f"autoresearch write discipline: {shown} must not change while the loop on '{current}' is active; "
        f"the only file to edit under {STATE_DIR}/ is {STATE_DIR}/{current}/train.py."
    )
    project = ProjectPaths(Path(root))
    target = project.state_dir.joinpath(*rel)
    if target in (project.chain_session, project.shim):
        return f"{head} It is written only by ar: `{SHIM} init` and `chain-init` change the current experiment, `session` the chain budget."
    if len(rel) < 2:
        if rel == (".",) or target.is_dir():
            return f"{head} It holds the experiments' state and records, written only by ar."
        return f"{head} Keep notes and helper files outside {STATE_DIR}/."
    paths = ExperimentPaths(project.root, rel[0])
    if target == paths.train_py:
        return (
            f"{head} '{rel[0]}' is not the current experiment. To work on it, start a follow-up with "
            f"`{SHIM} chain-init ...` or a new experiment with `{SHIM} init ...` (either becomes current); "
            f"`--expr {rel[0]}` selects it for read-only commands such as status and report."
        )
    if target == paths.prepare_py:
        return (
            f"{head} prepare.py is the experiment's frozen data and metric contract: `ar run` refuses to run once it "
            f"changes, so runs stay comparable. A different contract is a new experiment: `{SHIM} init ...`."
        )
    if target == paths.program_md:
        return (
            f"{head} program.md is the experiment's frozen brief (goal, metric, scope): `ar run` refuses to run once "
            f"it changes. A new goal or metric is a new experiment: `{SHIM} chain-init --goal ...` (a follow-up) "
            f"or `{SHIM} init ...`."
        )
    if target == paths.session:
        return f"{head} Loop settings change only through `{SHIM} session --<setting> VALUE` (the file is digest-sealed; a hand edit makes every command refuse)."
    if len(rel) == 4 and target == paths.run(rel[2]).train_py:
        return f"{head} Run snapshots are written only by ar. To start from this one, copy it onto {STATE_DIR}/{current}/train.py instead."
    owned = (paths.results, paths.best, paths.state, paths.baseline_py, paths.chain_decision, paths.lock, paths.active, paths.unclean, paths.supervisor_log)
    owned_dirs = (paths.runs, paths.best_ckpt, paths.best_ckpt_staging, paths.best_ckpt_previous)
    if target in owned or any(target == d or d in target.parents for d in owned_dirs):
        return (
            f"{head} {rel[-1]} is written only by ar (results, best, runs and checkpoints are the record the user "
            f"trusts); read it, or use `{SHIM} status`, `report` or `tail`."
        )
    return f"{head} Keep notes and helper files outside {STATE_DIR}/."


def bash_targets(command: str, cwd: str) -> list[tuple[str, str]]:
    """(path, directory it is relative to) for every file the command obviously writes. Best
    effort: a command it cannot parse yields nothing."""
    try:
        tokens = tokenize(strip_heredocs(command))
    except ValueError:
        return []
    targets: list[tuple[str, str]] = []
    words: list[str] = []
    i = 0
    while i <= len(tokens):
        token = tokens[i] if i < len(tokens) else "\n"
        if token in SEPARATORS:
            cwd = command_targets(words, cwd, targets)
            words = []
        elif token in WRITE_REDIRECTS or token in OTHER_REDIRECTS:
            if words and words[-1].isdigit():
                words.pop()  # the fd of `2>file`
            following = tokens[i + 1] if i + 1 < len(tokens) else ""
            if token in WRITE_REDIRECTS and following not in SEPARATORS and not (following.isdigit() or following == "-"):
                targets.append((expand(following), cwd))
            i += 1
        elif not (token.startswith("#") and not words):
            words.append(token)
        else:  # a comment runs to the end of the line
            while i + 1 < len(tokens) and tokens[i + 1] != "\n":
                i += 1
        i += 1
    return targets


def strip_heredocs(command: str) -> str:
    """The command without here-document bodies, which are data, not commands."""
    lines = command.replace("\\\n", " ").split("\n")
    kept = []
    ends: list[str] = []
    for line in lines:
        if ends:
            if line.strip() == ends[0]:
                ends.pop(0)
            continue
        kept.append(line)
        ends = [m.group(2) for m in HEREDOC.finditer(line)]
    return "\n".join(kept)


def tokenize(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>()\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def expand(word: str) -> str:
    return os.path.expanduser(os.path.expandvars(word))


def command_targets(words: list[str], cwd: str, targets: list) -> str:
    """Adds the files one simple command writes to targets; returns the working directory for
    the commands after it (a `cd` changes it)."""
    wrapped = False
    while words and (
        re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in WRAPPERS or words[0] in KEYWORDS
        or (wrapped and re.match(r"-|\d+[smhd]?$", words[0]))
    ):
        wrapped = wrapped or words[0] in WRAPPERS
        words = words[1:]  # NAME=value, keywords, sudo/env/timeout/... and their options (best effort)
    if not words:
        return cwd
    program, args = os.path.basename(words[0]), [expand(w) for w in words[1:]]
    if program == "cd":
        return os.path.join(cwd, args[0]) if args and args[0] != "-" else cwd
    written: list[str] = []
    if program == "tee":
        written = positional(args)
    elif program in ("cp", "mv", "ln", "install", "rsync"):
        written = copy_targets(program, args, cwd)
    elif program in ("sed", "perl"):
        written = in_place_targets(args)
    elif program in ("rm", "unlink", "rmdir", "shred"):
        written = positional(args)
    elif program == "truncate":
        written = positional(args, takes_value={"-s", "--size", "-r", "--reference"})
    elif program == "dd":
        written = [a[3:] for a in args if a.startswith("of=")]
    targets += [(path, cwd) for path in written]
    return cwd


def positional(args: list[str], takes_value: set = frozenset()) -> list[str]:
    out, skip, options = [], False, True
    for arg in args:
        if skip:
            skip = False
        elif options and arg == "--":
            options = False
        elif options and arg.startswith("-") and arg != "-":
            skip = arg in takes_value
        else:
            out.append(arg)
    return out


def copy_targets(program: str, args: list[str], cwd: str) -> list[str]:
    """Destinations of cp/mv/ln/install/rsync (a file, or each source's name inside a
    directory); mv also removes its sources."""
    target_dir = None
    for i, arg in enumerate(args):
        if arg in ("-t", "--target-directory") and i + 1 < len(args):
            target_dir = args[i + 1]
        elif arg.startswith("--target-directory="):
            target_dir = arg.split("=", 1)[1]
    files = [a for a in positional(args, takes_value={"-t", "--target-directory", "-S", "--suffix", "-m", "--mode", "-o", "-g", "-e"}) if a != target_dir]
    if target_dir is None:
        if len(files) < 2:
            return []
        *sources, dest = files
        into = len(sources) > 1 or dest.endswith("/") or os.path.isdir(os.path.join(cwd, dest))
        target_dir = dest if into else None
    else:
        sources, dest = files, None
    written = [os.path.join(target_dir, os.path.basename(s.rstrip("/"))) for s in sources] if target_dir else [dest]
    return written + (sources if program == "mv" else [])


def in_place_targets(args: list[str]) -> list[str]:
    """Files `sed -i` / `perl -i` rewrite: the arguments after the script."""
    in_place, script_given, files, skip = False, False, [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--in-place" or arg.startswith("--in-place="):
            in_place = True
        elif arg in ("--expression", "--file") or arg.startswith(("--expression=", "--file=")):
            script_given, skip = True, "=" not in arg
        elif arg.startswith("--"):
            continue
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:].split(".", 1)[0]
            in_place = in_place or "i" in letters
            if letters[-1:] in ("e", "E", "f"):
                script_given, skip = True, True
        else:
            files.append(arg)
    if not in_place:
        return []
    return files if script_given else files[1:]


if __name__ == "__main__":
    main()
