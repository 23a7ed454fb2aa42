"""A progress bar with the time left for the long loops of the commands (tqdm), drawn only
where someone watches: on a terminal, and not with --quiet. Elsewhere the commands keep
their plain progress lines, which read well in a log."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from .quiet import stderr_is_terminal


@contextmanager
def count_bar(description: str, unit: str, enabled: bool = True) -> Iterator[Callable[[int, int], None] | None]:
    """Yields `update(done, total)` drawing a bar with the rate and the time left, or None
    (no terminal, disabled, or tqdm absent): the caller then prints its own lines."""
    if not enabled or not stderr_is_terminal():
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # disable=False: the CLI sets TQDM_DISABLE=1 for the converters' own bars
            bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, disable=False, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:  # closed at once, so that the next line starts below the bar
            bar.close()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
