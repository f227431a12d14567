"""Imported by the command line before anything else, to start faster.

Two libraries import optional extras that a `kravia-sync` process never uses, and each costs
tens of milliseconds of every start:

- httpx's package imports its own command-line tool (`httpx._main`, with click, rich and
  pygments) whenever those are installed, and they are here (about 60 ms). This module marks the
  tool as absent, so httpx loads without it (`httpx.main` is then httpx's own message that its
  command line is not installed).
- structlog imports rich's traceback and pretty-printer (with pygments) when rich is installed,
  for its console renderer's display of exceptions (about 25 ms). kravia-sync's logging never
  shows it: every exception is made plain text by `format_exc_info`, before secrets are
  redacted, and only then rendered (see `kravia_sync.logging`). This module imports structlog
  with rich out of sight, and puts rich back at once for the command line's own tables.

Only the `kravia-sync` process does this, and only for a library not yet imported: a program that
imports kravia-sync as a library keeps httpx and structlog as they are.
"""

import sys
import types

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))

if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment] # an import of it raises ImportError
    try:
        import structlog  # noqa: F401 - imported here, without rich
    finally:
        sys.modules.pop("rich", None)
