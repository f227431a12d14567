"""Serving the Kravia simulator: `RunningSimulator` (in a background thread, for tests and
benchmarks) and `serve` (in the foreground, for `kravia-sync simulate`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import uvicorn

from kravia_sync.testing._dropped import quiet_dropped_connections
from kravia_sync.testing._sim_core import Simulator
from kravia_sync.testing._sim_faults import Faults
from kravia_sync.testing._sim_shapes import Shape
from kravia_sync.testing.running import RunningServer

__all__ = ["RunningSimulator", "serve"]


# --- serving ----------------------------------------------------------------------------------


class RunningSimulator(RunningServer):
    """Serves a Simulator on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, simulator: Simulator) -> None:
        # The app sets Date from Kravia's clock (see _DateHeader).
        super().__init__(simulator.app, name="Kravia simulator", date_header=False)
        self.simulator = simulator

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api/v2/" if self.root_url else ""


def serve(
    *,
    host: str,
    port: int,
    token: str,
    creditor_id: int | None,
    faults: Faults,
    data_file: Path | None,
    shape: Shape | None = None,
) -> None:
    """Serve a simulator until interrupted (blocking; for `kravia-sync simulate`).

    Ctrl-C (SIGINT) shuts the server down gracefully and returns normally.
    """
    simulator = Simulator(token=token, creditor_id=creditor_id, faults=faults, data_file=data_file)
    if shape is not None:
        simulator.shape = shape
    config = uvicorn.Config(
        simulator.app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        date_header=False,  # the app sets Date from Kravia's clock (see _DateHeader)
        timeout_graceful_shutdown=5,
    )
    quiet_dropped_connections()
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises SIGINT after shutdown
        uvicorn.Server(config).run()
