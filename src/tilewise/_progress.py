"""The progress bar: tiles done, rate and ETA, updated from the caller's thread only."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(total: int, enabled: bool) -> tqdm:
    # mininterval keeps redraws, not tiles, from costing time on fast runs.
    return tqdm(
        total=total,
        unit="tile",
        desc="tilewise",
        disable=not enabled,
        mininterval=0.2,
        dynamic_ncols=True,
        leave=True,
    )
