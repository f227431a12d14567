"""Kravia's API: the client, the module of assumptions about what Kravia's API looks like,
the connections and the pace of calls. Nothing here knows about cases or the state store."""
