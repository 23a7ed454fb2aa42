"""How every command ends on an error: one line on stderr and an exit status, never a traceback
(`featherface` and `featherface-pi` alike; torch-free, so the device SDK can use it)."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

from featherface.quiet import runtime_noise_filtered

# Errors whose message names the input and what was expected (CheckpointError, ImageError,
# BundleError are ValueErrors; BuildError, ConversionError RuntimeErrors): exit status 2.
EXPECTED: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError)


def run_reporting(prog: str, call: Callable[[], int], expected: tuple[type[BaseException], ...] = EXPECTED,
                  interrupted: str = "interrupted") -> int:
    """`call()`'s exit status; an error is one line on stderr: 2 for an `expected` one, 130
    for Ctrl-C (the line says `interrupted`), 1 for anything else (a bug or a tool's own
    failure; FEATHERFACE_DEBUG=1 re-raises it for the traceback)."""
    try:
        with runtime_noise_filtered():
            return call()
    except expected as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("FEATHERFACE_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"{prog}: error: unexpected {type(err).__name__}: {first} (set FEATHERFACE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
