"""`python -m kravia_sync` runs the command line."""

from kravia_sync.cli.app import main

main()
