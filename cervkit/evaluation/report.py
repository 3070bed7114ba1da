"""Writing a comparison to disk: Table 2, the paired tests and the figures, as ``python -m cervkit compare`` does.

:func:`write_comparison` joins :mod:`cervkit.evaluation.compare` (tables and paired tests) and
:mod:`cervkit.evaluation.figures` (box plots, Figure 5) into one folder, checking every target before it
writes anything and replacing each file atomically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from cervkit.core.files import atomic_path, check_writable
from cervkit.evaluation.compare import (
    Key,
    Source,
    collect,
    datasets_of,
    format_table2,
    paired_comparison,
    table2,
)
from cervkit.evaluation.figures import boxplots, choose_figure5_images, figure5

__all__ = ["file_stem", "write_comparison"]


def file_stem(name: str) -> str:
    """A data set or model name made safe for a file name.

    Parameters
    ----------
    name : str

    Returns
    -------
    str
        Letters, digits and ``_.+-`` only; ``"data"`` when nothing is left.
    """
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "data"


def write_comparison(evaluations: Mapping[Key, Source], out_dir: str | PathLike[str], *,
                     reference: str = "yolo-unet", figures: bool = True, figure5_kwargs: dict[str, Any] | None = None,
                     overwrite: bool = False) -> dict[str, Path]:
    """Write ``table2.csv``, ``table2_formatted.csv``, ``paired.csv`` and (``figures``) the figures.

    Figures: ``boxplots.png``; per data set ``figure5_<dataset>.png`` and ``figure5_<dataset>.csv`` (the
    images shown and why), which need the runs (``evaluation.json``'s ``run``, or ``figure5_kwargs``'s
    ``predictors``) and the ground-truth masks (``images.csv``'s ``mask`` column).

    Parameters
    ----------
    evaluations : mapping
        Model (and data set) → evaluation folder or result; see :func:`cervkit.evaluation.compare.collect`.
    out_dir : str or PathLike
        Destination folder (created).
    reference : str
        The model the others are compared with in ``paired.csv``.
    figures : bool
        Also draw the box plots and Figure 5 panels.
    figure5_kwargs : dict, optional
        Passed to :func:`cervkit.evaluation.figures.figure5` (e.g. ``predictors``).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict
        Name → written path.

    Raises
    ------
    FileExistsError
        A file exists and ``overwrite`` is False (checked before anything is written).
    """
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    results = collect(evaluations)
    names = ["table2.csv", "table2_formatted.csv", "paired.csv"]
    if figures:
        names += ["boxplots.png"] + [f"figure5_{file_stem(d)}.{x}" for d in datasets_of(results) for x in ("png", "csv")]
    for name in names:
        check_writable(out / name, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    by_key = {(r.model, r.dataset): r for r in results}
    table = table2(by_key)
    frames = {"table2.csv": table, "table2_formatted.csv": format_table2(table),
              "paired.csv": paired_comparison(by_key, reference=reference)}
    written = {}
    for name, frame in frames.items():
        with atomic_path(out / name, overwrite=overwrite) as tmp:
            frame.to_csv(tmp, index=False)
        written[name] = out / name
    if figures:
        figs = {"boxplots.png": boxplots(by_key)}
        for dataset in datasets_of(results):
            stem = f"figure5_{file_stem(dataset)}"
            chosen = choose_figure5_images(by_key, reference=reference, dataset=dataset)
            with atomic_path(out / f"{stem}.csv", overwrite=overwrite) as tmp:
                chosen.to_csv(tmp, index=False)
            written[f"{stem}.csv"] = out / f"{stem}.csv"
            figs[f"{stem}.png"] = figure5(by_key, chosen, dataset=dataset, **(figure5_kwargs or {}))
        for name, fig in figs.items():
            with atomic_path(out / name, overwrite=overwrite) as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written[name] = out / name
    return written
