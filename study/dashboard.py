"""``python -m study dashboard``: optuna-dashboard in-process on a study's storage.

It binds 127.0.0.1 unless told otherwise and serves the storage's artifact folder (see :mod:`study.artifacts`), so
each trial's learning curve and config show in its page. It opens the storage read-only: nothing is created.
"""

from __future__ import annotations

import sys
from typing import Any

from study.artifacts import artifact_dir_for, artifact_store_for
from study.errors import ConfigError
from study.storage import mask_url, open_existing


def dashboard_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/"


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080, out: Any = None) -> None:
    """Run optuna-dashboard in this process on ``storage_url`` until interrupted.

    Raises:
        ConfigError: a missing SQLite file, an unusable storage or a port that cannot be bound.
    """
    from optuna_dashboard import run_server

    out = out or sys.stdout
    if not 0 < port < 65536:
        raise ConfigError(f"--port: must be in 1..65535, but got {port}")
    storage = open_existing(storage_url)
    store = artifact_store_for(storage_url, create=False)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {host}: anyone who can reach this machine can see and edit the studies", file=out)
    print(
        f"optuna-dashboard for {mask_url(storage_url)}"
        + (f" (artifacts in {artifact_dir_for(storage_url)})" if store is not None else "")
        + f": open {dashboard_url(host, port)}  (Ctrl-C to stop)",
        file=out,
        flush=True,
    )
    try:
        run_server(storage, host=host, port=port, artifact_store=store)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pick another --port") from None
