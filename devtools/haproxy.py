"""Dev tool: a real HAProxy (Debian's package, `scripts/ops-deps.sh`) in front of collectors.

It runs the shipped deploy/haproxy/haproxy.cfg, copied into a temporary directory with one
`server` line per backend appended, on a free loopback port; `states` reads each server's
health through HAProxy's runtime socket. It never fakes HAProxy: without the binary, starting
fails loudly.

    python -m devtools.haproxy run --backend 127.0.0.1:8080 --backend 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from devtools.ports import free_port
from devtools.processes import guard, release, terminate

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "haproxy"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 5.0


def haproxy_binary() -> str | None:
    # Debian puts it in /usr/sbin, which a non-root PATH may lack
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")


class HAProxy:
    """Balances `backends` (host:port list, named c1, c2, ... in order); `stop()` ends the
    process and removes its directory."""

    def __init__(self, backends: Sequence[str], *, config_dir: Path = DEPLOY) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise RuntimeError("`haproxy` is not installed; run scripts/ops-deps.sh")
        self.binary = binary
        self.backends = list(backends)
        self.work_dir = Path(tempfile.mkdtemp(prefix="haproxy-"))
        # the copy keeps errors/ beside the config (its paths are relative to the config file)
        shutil.copytree(config_dir, self.work_dir / "haproxy")
        self.config = self.work_dir / "haproxy" / "haproxy.cfg"
        with self.config.open("a") as config:
            for number, address in enumerate(self.backends, 1):
                config.write(f"    server c{number} {address}\n")
        # a second file, so the shipped one stays as users get it: the runtime API socket
        self.socket_path = self.work_dir / "admin.sock"
        self.extra = self.work_dir / "runtime.cfg"
        self.extra.write_text(f"global\n    stats socket {self.socket_path} level admin\n")
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._guardian: subprocess.Popen[bytes] | None = None  # kills it if we die first

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def log_file(self) -> Path:
        return self.work_dir / "haproxy.log"

    def start(self) -> None:
        env = {**os.environ, "CAPTURE_LB_BIND": f"127.0.0.1:{self.port}"}
        command = [self.binary, "-db", "-f", str(self.config), "-f", str(self.extra)]
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._guardian = guard(self._process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening():
            if self._process.poll() is not None:
                self._process = None
                release(self._guardian)
                self._guardian = None
                raise RuntimeError(f"haproxy exited at start: {self.log_file.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy not listening within {START_TIMEOUT_S}s")
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return self.socket_path.exists()

    def command(self, line: str) -> str:
        """One command of HAProxy's runtime API, its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(SOCKET_TIMEOUT_S)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """Server name -> its row of `show stat` (status, scur for sessions open now, ...)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        result = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "collectors" and row.get("svname") not in (
                "FRONTEND",
                "BACKEND",
            ):
                result[row["svname"]] = row
        return result

    def states(self) -> dict[str, str]:
        """Server name -> its status as the health checks see it (UP, DOWN, UP 1/2, ...)."""
        return {name: row["status"] for name, row in self.stats().items()}

    def wait_state(self, server: str, status: str, *, timeout_s: float = 30.0) -> None:
        """Until the health checks put `server` (c1, c2, ...) in `status` (UP or DOWN)."""
        deadline = time.monotonic() + timeout_s
        while (seen := self.states().get(server)) != status:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} is {seen}, not {status}, after {timeout_s:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, STOP_TIMEOUT_S)  # hard stop: the tests' load has ended
        guardian, self._guardian = self._guardian, None
        release(guardian)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.haproxy")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="balance collectors with deploy/haproxy/haproxy.cfg")
    run.add_argument("--backend", action="append", required=True, help="host:port of a collector")
    args = parser.parse_args(argv)
    # SIGTERM stops it as Ctrl-C does (HAProxy runs in its own session and would outlive us)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with `&`
    with HAProxy(args.backend) as balancer:
        print(balancer.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
