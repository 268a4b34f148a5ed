"""The operator session in docs/commands.md, generated from the real commands so that
it cannot drift from what they print.

    python scripts/docs_samples.py      # precompile the example, run the session, rewrite the docs' block

tests/test_docs_samples.py runs the same session and compares it with the docs' block,
with what changes from run to run (keys, sizes, times, dates, differences) masked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "commands.md"
BEGIN, END = "<!-- session:begin -->\n", "<!-- session:end -->"
SHOWN_CACHE = "/tmp/demo-c"  # the cache dir as the docs show it
TARGET = "examples/tiny_llama.py:spec"
SESSION = [
    ["inspect-cache", "--cache-dir", "{cache}"],
    ["verify", TARGET, "--cache-dir", "{cache}", "--run"],
    ["clear", "--stale", "--dry-run", "--cache-dir", "{cache}"],
]
VOLATILE = [
    (re.compile(r"\b[0-9a-f]{12,}(-[0-9a-f]{4,})?\b"), "<key>"),
    (re.compile(r"\d+(\.\d+)?e[-+]\d+"), "<diff>"),
    (re.compile(r"\d+(\.\d+)? (B|KB|MB|GB)\b"), "<bytes>"),
    (re.compile(r"\d+(\.\d+)? s\b"), "<seconds>"),
    (re.compile(r"\b(just now|\d+[smhd] ago)"), "<when>"),
    (re.compile(r" {2,}"), " "),
]


def _cli() -> str:
    return str(Path(sys.executable).with_name("aotcache"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "AOTCACHE_FORCE_LOAD")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def precompile(cache: Path) -> None:
    done = subprocess.run(
        [_cli(), "precompile", TARGET, "--cache-dir", str(cache), "-q"], cwd=REPO, env=_env(), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])


def session(cache: Path) -> str:
    """The session's commands and what each prints (stdout), the cache dir shown as the docs show it."""
    parts = []
    for args in SESSION:
        argv = [a.format(cache=cache) for a in args]
        done = subprocess.run([_cli(), *argv], cwd=REPO, env=_env(), capture_output=True, text=True, check=False)
        shown = " ".join(a.format(cache=SHOWN_CACHE) for a in args)
        parts.append(f"$ aotcache {shown}\n{done.stdout.rstrip()}\n")
    return "\n".join(parts).replace(str(cache), SHOWN_CACHE)


def documented() -> str:
    text = DOC.read_text()
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    return block.removeprefix("```text\n").removesuffix("```\n")


def normalized(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, placeholder in VOLATILE:
            line = pattern.sub(placeholder, line)
        lines.append(line.rstrip())
    return lines


def write(text: str) -> None:
    doc = DOC.read_text()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}```text\n{text}```\n{END}{tail}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="aotcache-docs-") as folder:
        cache = Path(folder) / "c"
        precompile(cache)
        write(session(cache))
    print(f"rewrote the operator session in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
