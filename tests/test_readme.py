"""The README's commands, run as written against the real server, so they stay true.

Every command of the README's shell blocks runs here, in the README's order, through bash with the
text unchanged: `make serve` on the default ports, the curl line of each model, the CLI with no key
in the environment, `make stop`, `make archive`. The one exception is `make test`, which is what
runs this file (`.ci/run` runs it). Each command needs a check below that says what its answer must
be; a README command without one fails the test, so a new command cannot go in untested.

Why the default ports and not the session's server on free ports: "as written" is the point. The
newcomer's path is `make serve`, the key of the server it started, and the CLI finding that key in
.run/torchserve/ with nothing exported; a substituted URL or key would leave exactly that untested.
On a shared machine another TorchServe may hold 8080: the test then fails at once and says so,
rather than testing someone else's server. `make stop` always runs afterwards.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from clients import endpoints

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELL_BLOCKS = {"sh", "bash", "shell", "console"}
# README commands run elsewhere, with the proof that they are.
RUN_ELSEWHERE = {"make test": lambda: "make test" in (ROOT / ".ci" / "run").read_text().splitlines()}
# Variables a user might have exported that would hide whether the README alone is enough.
HIDING_VARIABLES = re.compile(r"^(TORCHSERVE_|TFSERVING_|TS_)")


def shell_commands(markdown: str) -> list[str]:
    """The commands of the shell code blocks, in order; `\\` continuations joined, comments and
    blank lines dropped."""
    commands = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", markdown, re.M | re.S):
        if lang not in SHELL_BLOCKS:
            continue
        for command in body.replace("\\\n", " ").splitlines():
            command = command.strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def answer(result: subprocess.CompletedProcess) -> object:
    assert result.returncode == 0, result.stderr
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON: {result.stdout[:500]!r}; stderr: {result.stderr[-500:]}")


def succeeds(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def json_example(marker: str) -> str:
    """The README's first json block that contains `marker`."""
    for block in re.findall(r"^```json\n(.*?)^```", README.read_text(), re.M | re.S):
        if marker in block:
            return block
    pytest.fail(f"the README shows no json example with {marker!r}")


# The answers shown in the README must be what the server answers (the numbers within the
# small differences a runtime change may bring).

def classifies_the_cat(result):
    top = answer(result)
    assert isinstance(top, list) and len(top) == 5, top
    shown = re.findall(r'"label": "([^"]+)"', json_example('"label"'))
    assert [c["label"] for c in top[:len(shown)]] == shown, top


def embeds_the_text(result):
    vector = answer(result)
    assert isinstance(vector, list) and len(vector) == 384, str(vector)[:300]
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)
    shown = re.search(r"JSON list of 384 floats, `\[([-\d., ]+), \.\.\.\]`", README.read_text())
    assert shown, "the README shows no embedding example"
    first = [float(x) for x in shown.group(1).split(",")]
    assert all(abs(a - b) < 1e-3 for a, b in zip(vector, first)), (vector[:len(first)], first)


def finds_the_face(result):
    faces = answer(result)
    shown = json.loads(json_example('"box"'))
    assert isinstance(faces, list) and len(faces) == len(shown), faces
    for face, example in zip(faces, shown):
        assert 0 < face["score"] <= 1, face
        assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"]), face
        points = [*face["box"], *sum(face["landmarks"], [])]
        expected = [*example["box"], *sum(example["landmarks"], [])]
        assert all(abs(a - b) < 2 for a, b in zip(points, expected)), (face, example)


def cli_names_the_cat(result):
    succeeds(result)
    assert "cat" in result.stdout, result.stdout


# Command pattern -> what its run must show. Every README shell command must match one.
CHECKS: list[tuple[str, Callable[[subprocess.CompletedProcess], None]]] = [
    (r"make serve", succeeds),
    (r"TOKEN=\$\(make -s key\)", succeeds),
    (r"curl .*-T samples/cat\.jpg .*/predictions/efficientnet_lite0", classifies_the_cat),
    (r"curl .*'\{\"text\": \"A man is eating food\.\"\}' .*/predictions/minilm_embeddings",
     embeds_the_text),
    (r"curl .*-T samples/astronaut\.jpg .*/predictions/face_detector", finds_the_face),
    (r"\.venv/bin/python -m clients predict samples/cat\.jpg", cli_names_the_cat),
    (r"make stop", succeeds),
    (r"make archive", succeeds),
]


def check_for(command: str) -> Callable[[subprocess.CompletedProcess], None] | None:
    for pattern, check in CHECKS:
        if re.fullmatch(pattern, command):
            return check
    return None


def readme_commands() -> list[str]:
    commands = shell_commands(README.read_text())
    assert commands, "the README has no shell commands"
    return commands


def test_every_readme_command_is_run_and_checked():
    for command in readme_commands():
        if command in RUN_ELSEWHERE:
            assert RUN_ELSEWHERE[command](), f"{command!r} is said to run elsewhere, but does not"
        else:
            assert check_for(command), (f"README command {command!r} has no check in "
                                        "tests/test_readme.py: add one")


def test_every_code_block_says_its_language():
    """An unlabelled block could hide a shell command from the checks above."""
    fences = re.findall(r"^```(\w*)\n.*?^```", README.read_text(), re.M | re.S)
    assert fences and all(fences), fences


def test_inline_make_targets_exist():
    """`make <target>` named in the README's prose is a target `make help` lists."""
    listed = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    targets = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    named = set(re.findall(r"`make (?:-s )?([a-z][a-z0-9-]*)", README.read_text()))
    assert named and named <= targets, sorted(named - targets)


def busy_ports() -> list[int]:
    busy = []
    for port in endpoints.TORCHSERVE_PORTS.values():
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((endpoints.LOOPBACK, port)) == 0:
                busy.append(port)
    return busy


def run_as_written(command: str, env: dict[str, str], state: Path) -> subprocess.CompletedProcess:
    """One command through bash, unchanged; variables it sets (TOKEN=...) carry to the next."""
    script = f"set -a\n{command}\nstatus=$?\nenv -0 > {state}\nexit $status\n"
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1800)
    env.clear()
    env.update(item.split("=", 1) for item in state.read_text().split("\0") if "=" in item)
    return result


@pytest.mark.slow
def test_readme_commands_as_written(tmp_path):
    busy = busy_ports()
    if busy:
        pytest.fail(f"ports {busy} are taken on 127.0.0.1: this test runs the README as written, "
                    "with `make serve` on the default ports; stop what listens there (`make stop`)")
    env = {k: v for k, v in os.environ.items() if not HIDING_VARIABLES.match(k)}
    failures = []
    try:
        for command in readme_commands():
            if command in RUN_ELSEWHERE:
                continue
            result = run_as_written(command, env, tmp_path / "env")
            try:
                check_for(command)(result)
            except (AssertionError, pytest.fail.Exception) as error:
                failures.append(f"$ {command}\n{error}")
                if command == "make serve":
                    break
    finally:
        subprocess.run(["make", "stop"], cwd=ROOT, capture_output=True, timeout=300)
    assert not failures, "\n\n".join(failures)
    assert not busy_ports(), "`make stop` left a TorchServe port open"


def test_links_of_the_readme_and_the_manual_resolve():
    """Every relative link of README.md and docs/*.md names a file of the repository (pages
    owned by other topics included: a link to a page nobody wrote fails here)."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
