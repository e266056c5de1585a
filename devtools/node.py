"""Dev tool: the browser SDK's npm package (sdk-js/) installed from its lock file and built.

`ensure_built()` runs `npm ci` when node_modules is missing or older than the lock file, then
`npm run build`; it never installs anything the lock file does not pin.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SDK_JS = Path(__file__).resolve().parent.parent / "sdk-js"
NPM_TIMEOUT_S = 600


class NodeError(RuntimeError):
    """npm is missing or one of its commands failed."""


def npm(*args: str, cwd: Path = SDK_JS) -> subprocess.CompletedProcess[str]:
    """Run `npm <args>` in `cwd`; output captured, never raises for a non-zero exit."""
    binary = shutil.which("npm")
    if binary is None:
        raise NodeError("npm not found: Node.js is needed for the browser SDK")
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False
    )


def ensure_installed(cwd: Path = SDK_JS) -> None:
    """`npm ci` unless node_modules is at least as new as package-lock.json."""
    marker = cwd / "node_modules" / ".package-lock.json"
    lock = cwd / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    result = npm("ci", "--no-audit", "--no-fund", cwd=cwd)
    if result.returncode != 0:
        raise NodeError(f"npm ci failed in {cwd}:\n{result.stdout}{result.stderr}")


def ensure_built(cwd: Path = SDK_JS) -> Path:
    """Install and build the SDK; the path of the script-tag build."""
    ensure_installed(cwd)
    result = npm("run", "build", cwd=cwd)
    if result.returncode != 0:
        raise NodeError(f"npm run build failed:\n{result.stdout}{result.stderr}")
    return cwd / "dist" / "capture.iife.js"
