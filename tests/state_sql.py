"""Direct SQL on a state database, for tests that set up or look at what the store's own
methods do not: SQLAlchemy Core on the tables of `kravia_sync.state.schema`."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from kravia_sync.state.schema import TABLES
from kravia_sync.state.store import StateStore

CASES = TABLES["cases"]
JOURNAL = TABLES["journal"]
LEASE = TABLES["lease"]


def state_engine(store: StateStore) -> Engine:
    """An engine on the store's database (each connection closed when given back)."""
    return create_engine(
        f"sqlite:///{store.path}", poolclass=NullPool, connect_args={"timeout": 30}
    )
