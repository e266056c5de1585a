"""Start-up checks of `capture serve` that need the machine: the sink, data dir, listener and
the demo page's script.

Run once before anything serves (and before workers fork), so that a setting which cannot
work stops start-up with one line naming it (exit 2) rather than a traceback from inside the
server. Probes only: it must not keep a file or socket open, nor start the sink.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path

from collector.settings import Settings, SettingsError, env_var
from collector.sinks.file import LOG_SUFFIX, LogLocked, lock_log, parse_log_name


def check_startup(settings: Settings) -> None:
    """Raise SettingsError, naming the setting, for what would fail once the server runs."""
    if settings.sink_kind == "memory":
        # The memory sink acknowledges what only RAM holds: a 200 would promise durability
        # that a restart takes back. It exists for tests, which pass it to create_app.
        raise SettingsError(
            f"{env_var('sink')}=memory is for tests only: it keeps events in RAM, so a 200"
            " would not mean they are durable; use file or kafka"
        )
    if settings.sink_kind == "file":
        check_data_dir(settings.data_dir, writers=settings.workers)
    if settings.demo:
        check_demo_bundle(settings.demo_bundle)
    check_listen_address(settings.host, settings.port, reuse_port=settings.workers > 1)


def check_demo_bundle(bundle: str) -> None:
    """The demo page's script (the browser SDK build) is a file this process can read."""
    path = Path(bundle)
    if path.is_file() and os.access(path, os.R_OK):
        return
    raise SettingsError(
        f"invalid setting {env_var('demo_bundle')} (--demo-bundle): {bundle} is not a readable"
        f" file; {env_var('demo')}=1 serves it to the demo page: build it with"
        " `npm ci && npm run build` in sdk-js (scripts/run.sh does), or point it at the build"
    )


def check_data_dir(data_dir: str, *, writers: int = 1) -> None:
    """The file sink can create the directory, create files in it and append to its logs,
    and no other process writes the logs of the `writers` workers about to start."""
    path = Path(data_dir)

    def refuse(problem: str) -> SettingsError:
        return SettingsError(
            f"invalid setting {env_var('data_dir')} (--data-dir): cannot keep the file sink's"
            f" logs in {data_dir}: {problem}"
        )

    try:
        path.mkdir(parents=True, exist_ok=True)
        # A real file, not os.access: a read-only mount or a full quota answers here too.
        with tempfile.TemporaryFile(dir=path, prefix=".capture-probe-"):
            pass
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from exc
    try:
        logs = [log for log in path.iterdir() if log.name.endswith(LOG_SUFFIX)]
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from exc
    for log in logs:
        # an existing topic log the sink could not reopen would fail every request for it
        if not log.is_file() or not os.access(log, os.R_OK | os.W_OK):
            raise refuse(f"{log.name} is not a file this process can read and append to")
        parsed = parse_log_name(log.name)
        if parsed is not None and parsed[1] < writers:
            # the lock each worker's sink takes on its logs, tried and let go at once
            try:
                fd = os.open(log, os.O_RDONLY)
            except OSError as exc:
                raise refuse(f"{log.name}: {exc.strerror or exc}") from exc
            try:
                lock_log(fd, log)
            except LogLocked as exc:
                raise refuse(
                    f"another process is writing {log.name} (a second collector on this"
                    " data directory?): each log has one writer"
                ) from exc
            except OSError as exc:  # a file system without flock: the sink could not lock
                raise refuse(f"{log.name} cannot be locked: {exc.strerror or exc}") from exc
            finally:
                os.close(fd)


def check_listen_address(host: str, port: int, *, reuse_port: bool = False) -> None:
    """Every address `host` resolves to can be bound on `port`, as the server will bind it."""
    where = f"{host}:{port} ({env_var('host')} / {env_var('port')})"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise SettingsError(f"cannot listen on {where}: {exc}") from exc
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                # as asyncio's create_server does on POSIX, so a port in TIME_WAIT still passes
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    with contextlib.suppress(OSError):
                        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
        except OSError as exc:
            raise SettingsError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
