"""Imported by the command line before anything else, to start faster.

httpx's package imports its own command-line tool (`httpx._main`, with click, rich and
pygments) whenever those are installed, and they are here: that costs about 60 ms of every
start of `kravia-sync`, which never runs that tool. Importing this module marks the tool as
absent, so httpx loads without it (`httpx.main` is then httpx's own message that its command
line is not installed). Only the `kravia-sync` process does this: a program that imports
kravia-sync as a library keeps httpx as it is.
"""

import sys
import types

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))
