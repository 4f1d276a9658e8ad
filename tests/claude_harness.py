"""Drive the real Claude Code CLI against this plugin, with a scripted model on loopback.

* `install_claude()` installs the pinned npm package `@anthropic-ai/claude-code` into
  `~/.cache/autoresearch-tests/claude-code` (outside the repository, so a copy of the tree never
  carries its ~700 MB) once and returns the `claude` executable. The calling
  test is skipped, with the reason, when node/npm are missing or the install fails.
* `ScriptedModel` is a stdlib HTTP server on 127.0.0.1 (random port, daemon threads) that speaks
  just enough of the Anthropic Messages API to answer the CLI from a script: a list of steps,
  each a tool call (`bash("...")`, `tool("Edit", file_path=..., ...)`) or a final text
  (`say("...")`). `POST /v1/messages` is answered as server-sent events when the request says
  `"stream": true` (message_start, content_block_start/delta/stop, message_delta with the
  stop_reason, message_stop) and as one JSON message otherwise; `count_tokens` gets a fixed
  count; any other path gets `{}`. Every request is recorded.
* `run_claude(project_dir, prompt, script)` starts a server, runs `claude -p PROMPT` in
  `project_dir` with this repository loaded as a plugin (`--plugin-dir`), a throwaway HOME and
  `ANTHROPIC_BASE_URL` pointing at the server, and returns the exit code, stdout and the
  recorded requests (`ClaudeRun`).

Request classification: a `POST /v1/messages` request belongs to the main conversation when its
`tools` list offers the `Bash` tool. Side requests the CLI may make (session title generation,
quota or API-key probes, topic detection, prompt-type hooks) carry no tools or another tool set;
they get the text "ok" and consume no step. The step a main request gets is chosen by the
conversation itself, not by a counter: a request whose `messages` hold k assistant turns gets
step k, so a retried request gets the same step again and no side request can shift the script.
Past the end of the script the model says "done." (end_turn), which ends `claude -p`. The script
never calls the Agent tool, whose subagents would also be offered Bash.

What the CLI sends (2.1.330): the expanded skill is NOT in the system prompt. The first main
request's first user message holds system-reminder text blocks (environment, skill listing,
date, ...), then `<command-name>/plugin:skill</command-name>` with the arguments, then a text
block "Base directory for this skill: <plugin>/skills/<name>" followed by the SKILL.md body
(frontmatter removed, `${CLAUDE_PLUGIN_ROOT}` and `$ARGUMENTS` replaced). Tool results come back
as `tool_result` blocks in later user messages; a PreToolUse hook's deny arrives as
`is_error: true` with "PreToolUse:<Tool> hook error: <reason>".

Bounds: the server answers at most `MAX_REQUESTS` requests (then a non-retryable 400), and
`run_claude` kills the CLI's whole process group after `timeout` seconds.
"""

from __future__ import annotations

import fcntl
import http.server
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
from stack_env import cache_root

REPO = Path(__file__).resolve().parent.parent
CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_VERSION = "2.1.330"
CACHE_DIR = cache_root() / "claude-code"
MAX_REQUESTS = 200

# Tools the scripted model may call without a permission prompt; `--permission-prompts none`
# denies anything else instead of waiting for an answer. Not bypassPermissions: as root (CI runs
# as root) Claude Code refuses it unless IS_SANDBOX=1, and a scoped allow list is closer to how
# users run the loop. PreToolUse hooks run before this check and their deny wins either way.
ALLOWED_TOOLS = "Bash,Edit,Write,Read,Glob,Grep"

# Offline: no auto-updater, no telemetry, error reporting or other nonessential traffic.
OFFLINE_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
}


# --------------------------------------------------------------------------------------------
# install

_install_failure: str | None = None  # remembered so a failed install is tried once per session


def _installed_version(cache: Path) -> str | None:
    manifest = cache / "node_modules" / "@anthropic-ai" / "claude-code" / "package.json"
    try:
        return json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _ready(cache: Path, version: str) -> bool:
    return _installed_version(cache) == version and os.access(cache / "node_modules" / ".bin" / "claude", os.X_OK)


def _install(cache: Path, version: str) -> str | None:
    """Install the package; None on success, else why not."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "node/npm not found on PATH"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / "claude-code.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time (parallel pytest processes)
        if _ready(cache, version):
            return None
        spec = f"{CLAUDE_PACKAGE}@{version}"
        try:
            done = subprocess.run(
                [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", "--no-save", "--loglevel=error",
                 "--fetch-retries=1", "--fetch-timeout=60000", spec],
                capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
            )
        except subprocess.TimeoutExpired:
            return f"`npm install {spec}` timed out"
        if done.returncode != 0 or not _ready(cache, version):
            tail = (done.stderr or done.stdout).strip().splitlines()[-4:]
            return f"`npm install {spec}` failed (exit {done.returncode}): {' | '.join(tail)}"
    exe = cache / "node_modules" / ".bin" / "claude"
    with tempfile.TemporaryDirectory(prefix="claude-home-") as home:
        probe = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, check=False,
                               env=claude_env(Path(home)), stdin=subprocess.DEVNULL)
    if probe.returncode != 0 or version not in probe.stdout:
        return f"`claude --version` did not run: {(probe.stderr or probe.stdout).strip()[-300:]}"
    return None


def install_claude(cache: Path = CACHE_DIR, version: str = CLAUDE_VERSION) -> Path:
    """The `claude` executable of the pinned version, installed with npm on first use.

    Skips the calling test when node/npm are missing or the install fails (no registry, say).
    """
    global _install_failure
    exe = cache / "node_modules" / ".bin" / "claude"
    if _ready(cache, version):
        return exe
    if _install_failure is None:
        _install_failure = _install(cache, version) or ""
    if _install_failure:
        pytest.skip(f"Claude Code {version} unavailable: {_install_failure}")
    return exe


def claude_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `claude` process.

    This process's environment minus anything that could point the CLI at a real account or at
    a calling agent's session (ANTHROPIC_*, CLAUDE*), ar's own AR_* variables, and this repo's
    virtualenv (`uv run pytest` puts .venv/bin, which has an `ar` script, first on PATH; a user's
    shell does not have it), plus the offline switches and the throwaway HOME.
    """
    drop = ("ANTHROPIC_", "CLAUDE", "AR_", "OTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for key in ("VIRTUAL_ENV", "NODE_OPTIONS", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        env.pop(key, None)
    venv = str(REPO / ".venv")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(venv))
    env.update(OFFLINE_ENV)
    for key in ("NO_PROXY", "no_proxy"):  # the model server is on loopback: never via a proxy
        env[key] = ",".join(x for x in ("127.0.0.1", "localhost", env.get(key)) if x)
    env["HOME"] = str(home)
    env.update(extra)
    return env


# --------------------------------------------------------------------------------------------
# the scripted model


@dataclass
class ToolCall:
    name: str
    input: dict[str, Any]


@dataclass
class Say:
    text: str


Step = ToolCall | Say


def tool(name: str, **input: Any) -> ToolCall:
    """A script step: the model calls tool `name` with `input`."""
    return ToolCall(name, input)


def bash(command: str, timeout_ms: int = 600_000) -> ToolCall:
    """A script step: a Bash call with the tool's time limit raised to its maximum (10 min)."""
    return ToolCall("Bash", {"command": command, "timeout": timeout_ms, "description": "scripted step"})


def say(text: str) -> Say:
    """A script step: the model answers with text and ends its turn."""
    return Say(text)


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    kind: str = "other"  # "main" (answered from the script), "side" (answered "ok"), "other"
    step: int | None = None


@dataclass
class ToolResult:
    """One tool call of the main conversation and what the CLI sent back for it."""

    name: str
    input: dict[str, Any]
    text: str
    is_error: bool


def is_main_request(body: Any) -> bool:
    """The classification rule: the main conversation is offered the Bash tool."""
    tools = body.get("tools") if isinstance(body, dict) else None
    return bool(tools) and any(isinstance(t, dict) and t.get("name") == "Bash" for t in tools)


def flatten(content: Any) -> str:
    """The text of a message content (string, block or list of blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(flatten(c) for c in content)
    if isinstance(content, dict):
        if content.get("type") == "tool_use":
            return json.dumps(content.get("input"))
        if "text" in content:
            return str(content["text"])
        if "content" in content:
            return flatten(content["content"])
    return ""


class ScriptedModel:
    """A fake Messages API on 127.0.0.1 that replies from `script`. Use as a context manager."""

    def __init__(self, script: list[Step]):
        self.script = list(script)
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        model = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # a stalled client cannot hold a handler thread for long

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                model._handle(self)

            def do_POST(self) -> None:
                model._handle(self)

            def do_HEAD(self) -> None:
                model._handle(self)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="scripted-model", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "use ScriptedModel as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- what was sent
    def main_requests(self) -> list[dict]:
        with self._lock:
            return [r.body for r in self.requests if r.kind == "main"]

    def tool_results(self) -> list[ToolResult]:
        """Every tool call of the main conversation with its result, in order.

        Read from the longest main request, which carries the whole conversation.
        """
        mains = self.main_requests()
        if not mains:
            return []
        messages = max(mains, key=lambda b: len(b.get("messages", []))).get("messages", [])
        calls: dict[str, dict] = {}
        out: list[ToolResult] = []
        for message in messages:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    calls[block.get("id", "")] = block
                elif block.get("type") == "tool_result":
                    call = calls.get(block.get("tool_use_id", ""), {})
                    out.append(ToolResult(call.get("name", "?"), call.get("input", {}), flatten(block.get("content")),
                                          bool(block.get("is_error"))))
        return out

    def first_prompt(self) -> str:
        """Everything the first main request showed the model: system prompt, then messages."""
        mains = self.main_requests()
        if not mains:
            return ""
        body = mains[0]
        return flatten(body.get("system")) + "\n" + "\n".join(flatten(m.get("content")) for m in body.get("messages", []))

    # -- serving
    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(min(length, 64 << 20)) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = Recorded(h.command, h.path, body)
        with self._lock:
            over = len(self.requests) >= MAX_REQUESTS
            self.requests.append(record)
        path = h.path.split("?", 1)[0].rstrip("/")
        if over:
            return _send_json(h, 400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                  "message": "scripted model: request limit reached"}})
        if h.command == "POST" and path.endswith("/v1/messages/count_tokens"):
            return _send_json(h, 200, {"input_tokens": 1000})
        if not (h.command == "POST" and path.endswith("/v1/messages") and isinstance(body, dict)):
            return _send_json(h, 200, {})
        if is_main_request(body):
            turn = sum(1 for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "assistant")
            record.kind, record.step = "main", turn
            step = self.script[turn] if turn < len(self.script) else Say("done.")
        else:
            record.kind = "side"
            step = Say("ok")
        message = self._message(body, step, record.step)
        if body.get("stream"):
            _send_stream(h, message)
        else:
            _send_json(h, 200, message)

    def _message(self, body: dict, step: Step, turn: int | None) -> dict:
        if isinstance(step, ToolCall):
            tag = "side" if turn is None else f"{turn:03d}"
            content = [{"type": "tool_use", "id": f"toolu_{tag}_{next(self._ids):04d}", "name": step.name, "input": step.input}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": step.text}]
            stop = "end_turn"
        return {
            "id": f"msg_scripted_{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or "scripted",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }


def _send_json(h: http.server.BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.send_header("request-id", "req_scripted")
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)


def _send_stream(h: http.server.BaseHTTPRequestHandler, message: dict) -> None:
    """The message as server-sent events; the connection closes after message_stop."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Cache-Control", "no-cache")
    h.send_header("Connection", "close")
    h.send_header("request-id", "req_scripted")
    h.end_headers()
    h.close_connection = True

    def event(data: dict) -> None:
        h.wfile.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())

    usage = message["usage"]
    event({"type": "message_start", "message": dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            event({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
            event({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": block["text"]}})
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            event({"type": "content_block_start", "index": index, "content_block": start})
            event({"type": "content_block_delta", "index": index,
                   "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        event({"type": "content_block_stop", "index": index})
    event({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
           "usage": {"output_tokens": usage["output_tokens"]}})
    event({"type": "message_stop"})
    h.wfile.flush()


# --------------------------------------------------------------------------------------------
# running the CLI


@dataclass
class ClaudeRun:
    returncode: int
    stdout: str
    stderr: str
    requests: list[Recorded]
    model: ScriptedModel

    def tool_results(self) -> list[ToolResult]:
        return self.model.tool_results()

    def first_prompt(self) -> str:
        return self.model.first_prompt()

    def explain(self) -> str:
        """A short account of the run, for assertion messages."""
        reqs = "\n".join(f"  {r.method} {r.path} {r.kind}{'' if r.step is None else f' step {r.step}'}" for r in self.requests)
        results = "\n".join(f"  [{r.name}{' ERROR' if r.is_error else ''}] {json.dumps(r.input)[:200]}\n    "
                            + r.text[-1200:].replace("\n", "\n    ") for r in self.tool_results())
        return (f"claude exited {self.returncode}\n--- stdout\n{self.stdout[-1500:]}\n--- stderr\n{self.stderr[-1500:]}\n"
                f"--- requests\n{reqs}\n--- tool calls\n{results}")


def run_claude(project_dir: Path, prompt: str, script: list[Step], *, env: dict[str, str] | None = None,
               timeout: float = 150, plugin_dir: Path = REPO, extra_args: tuple[str, ...] = ()) -> ClaudeRun:
    """Run `claude -p PROMPT` in `project_dir` with `plugin_dir` as a plugin, against a scripted model.

    `env` adds to (or overrides) the CLI's environment. The CLI's whole process group is killed
    after `timeout` seconds.
    """
    exe = install_claude()
    with tempfile.TemporaryDirectory(prefix="claude-home-") as home, ScriptedModel(script) as model:
        run_env = claude_env(Path(home), ANTHROPIC_BASE_URL=model.url, ANTHROPIC_API_KEY="dummy", **(env or {}))
        cmd = [str(exe), "--plugin-dir", str(plugin_dir), f"--allowed-tools={ALLOWED_TOOLS}", "--permission-prompts", "none",
               "--no-session-persistence", *extra_args, "-p", prompt]
        proc = subprocess.Popen(cmd, cwd=project_dir, env=run_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n[harness] claude killed after {timeout}s"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with model._lock:
            requests = list(model.requests)
        return ClaudeRun(proc.returncode, out, err, requests, model)
