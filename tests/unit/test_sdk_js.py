"""The browser SDK's own checks, run from pytest: its Node unit tests, the size budget of the
script-tag build, and the npm package's shape (issue 13). The browser tests proper are in
tests/integration/test_browser_sdk.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from devtools.node import SDK_JS, ensure_built, npm


@pytest.fixture(scope="module")
def built() -> None:
    ensure_built()


def test_node_unit_tests_pass(built: None) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for the browser SDK"
    files = sorted(str(path) for path in (SDK_JS / "test").glob("*.test.mjs"))
    assert len(files) >= 2
    result = subprocess.run(
        [node, "--test", *files],
        cwd=SDK_JS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert re.search(r"^# fail 0$", result.stdout, re.MULTILINE), result.stdout[-2000:]


def test_the_script_tag_build_fits_the_size_budget(built: None) -> None:
    result = npm("run", "--silent", "size")
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"(\d+) B gzipped \(budget (\d+) B\)", result.stdout)
    assert match is not None, result.stdout
    assert int(match[1]) <= int(match[2]) <= 5 * 1024


def test_npm_pack_ships_the_builds_and_the_types(built: None) -> None:
    result = npm("pack", "--dry-run", "--json", "--ignore-scripts")
    assert result.returncode == 0, result.stderr
    [packed] = json.loads(result.stdout)
    files = {entry["path"] for entry in packed["files"]}
    assert {"dist/index.js", "dist/index.d.ts", "dist/plan.d.ts", "dist/capture.iife.js"} <= files
    assert not any(path.startswith(("src/", "test/", "node_modules/")) for path in files)
    manifest = json.loads((SDK_JS / "package.json").read_text())
    assert manifest["sideEffects"] is False
    assert manifest["exports"]["."]["types"] == "./dist/index.d.ts"
    assert manifest.get("dependencies", {}) == {}
