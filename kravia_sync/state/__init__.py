"""The state store: one SQLite file holding every case, its journal, the mirror of Kravia's
cases and the writer lease; its schema, the group commit and the lease's heartbeat."""
