"""The `kravia-sync` command line (`app`), with the demo, the example configuration and the
connector scaffold it offers."""
