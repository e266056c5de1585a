"""scripts/run.sh (`make run`): the browser SDK failing to install or build costs the demo page,
never the collector and the Python demo.

Runs the real script in a scratch copy of the repo where bootstrap, the collector, Python and
npm are stand-ins that record how they were called; nothing is installed or served.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 60


def stand_in(path: Path, script: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def scratch_repo(tmp_path: Path, *, npm: str | None) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("run.sh", "js-deps.sh"):
        shutil.copy2(ROOT / "scripts" / name, repo / "scripts" / name)
    (repo / "sdk-js").mkdir()
    shutil.copy2(ROOT / "sdk-js" / "package-lock.json", repo / "sdk-js" / "package-lock.json")
    calls = tmp_path / "calls"
    stand_in(repo / "scripts" / "bootstrap.sh", "exit 0\n")
    stand_in(repo / ".venv" / "bin" / "capture", f'echo "capture $*" >> {calls}\n')
    stand_in(repo / ".venv" / "bin" / "python", f'echo "python $*" >> {calls}\ncat > /dev/null\n')
    tools = tmp_path / "bin"
    tools.mkdir()
    # only what the script needs besides npm: a PATH without the machine's own npm
    for tool in ("bash", "find", "cat", "dirname", "env", "sh"):
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    if npm is not None:
        stand_in(tools / "npm", npm)
    return repo, {"PATH": str(tools), "HOME": str(tmp_path), "CAPTURE_PORT": "18080"}


def run(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(repo / "scripts" / "run.sh")],
        env={**env, "PATH": env["PATH"]},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
        cwd=os.fspath(repo),
    )


def test_an_npm_that_cannot_install_costs_only_the_demo_page(tmp_path: Path) -> None:
    repo, env = scratch_repo(tmp_path, npm='echo "npm: network unreachable" >&2\nexit 1\n')
    result = run(repo, env)
    assert result.returncode == 0, result.stderr
    assert "so no demo page" in result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert any(line.startswith("capture serve") and "--demo 0" in line for line in calls)
    assert any("examples/quickstart.py" in line for line in calls), calls


def test_no_npm_at_all_costs_only_the_demo_page(tmp_path: Path) -> None:
    repo, env = scratch_repo(tmp_path, npm=None)
    result = run(repo, env)
    assert result.returncode == 0, result.stderr
    assert "npm not found, so no demo page" in result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert any(line.startswith("capture serve") and "--demo 0" in line for line in calls)
