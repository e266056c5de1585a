"""The browser SDK's own checks, run from pytest: its Node unit tests, the size budget of the
script-tag build, the npm package's shape, and sampling verdicts against the Python SDK's
(issue 13). The browser tests proper are in tests/integration/test_browser_sdk.py.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import uuid

import pytest

from capture_sdk._intake import is_sampled_in, sample_thresholds
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
    assert manifest.get("sideEffects") is False, "bundlers may drop what an app does not import"
    # every entry point the manifest names is in the tarball
    assert manifest.get("types") == "./dist/index.d.ts"
    root = manifest["exports"]["."]
    # TypeScript reads the first condition that matches: `types` has to come first
    assert next(iter(root)) == "types", root
    assert root["types"] == manifest["types"]
    named = [manifest["main"], manifest["types"], *root.values(), manifest["exports"]["./script"]]
    for path in named:
        assert path.removeprefix("./") in files, f"{path} is named but not packed"
    # no runtime dependencies of any kind: the package installs alone
    for field in ("dependencies", "peerDependencies", "optionalDependencies", "bundleDependencies"):
        assert not manifest.get(field), f"{field}: {manifest[field]}"


def sampling_cases() -> list[tuple[str, float]]:
    """(event_id, rate) pairs: ids on each side of every rate's threshold, the extremes, and
    fixed pseudo-random ids."""
    rates = [0.0, 0.1, 1 / 3, 0.5, 0.3, 0.999, 1.0]
    rng = random.Random(13)
    cases: list[tuple[str, float]] = []
    for rate in rates:
        threshold = int(rate * (1 << 48))
        tails = {0, (1 << 48) - 1} | {
            t for t in (threshold - 1, threshold, threshold + 1) if 0 <= t < 1 << 48
        }
        head = "01937f1e-0000-7000-8000-"
        cases += [(f"{head}{tail:012x}", rate) for tail in sorted(tails)]
        for _ in range(40):
            # a UUIDv7's shape: version 7, variant 10, random low bits
            bits = rng.getrandbits(128) & ~(0xF << 76) | (0x7 << 76)
            bits = bits & ~(0x3 << 62) | (0x2 << 62)
            cases.append((str(uuid.UUID(int=bits)), rate))
    return cases


def python_verdict(event_id: str, rate: float) -> bool:
    threshold = sample_thresholds({"e": rate}).get("e")
    return threshold is None or is_sampled_in(event_id, threshold)


def test_sampling_gives_each_event_id_the_python_sdks_verdict(built: None) -> None:
    """One event_id, one verdict in both SDKs (issue 13): the browser SDK's rule, run in Node,
    against capture_sdk's own functions."""
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for the browser SDK"
    cases = sampling_cases()
    expected = [python_verdict(event_id, rate) for event_id, rate in cases]
    assert 0 < sum(expected) < len(expected)
    module = (SDK_JS / "dist" / "ids.js").as_uri()
    script = (
        f"const {{ sampledIn }} = await import({json.dumps(module)});"
        f"const cases = {json.dumps(cases)};"
        "console.log(JSON.stringify(cases.map(([id, rate]) => sampledIn(id, rate))));"
    )
    result = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    differ = [case for case, a, b in zip(cases, expected, got, strict=True) if a != b]
    assert not differ, f"{len(differ)} verdicts differ, e.g. {differ[:3]}"
