"""Issue 6's angle accuracy: C2–C7 Cobb and adjacent endplate angles against the phantoms' geometry.

Draws ``--n`` phantoms per style at ``--size`` px (X-ray: seeds ``--seed0`` …, MRI: the next
``--n`` seeds, since a seed's label map and angles are the same in both styles), measures
each true label map with :func:`cervkit.measurements.spine.measure_spine` (levels and anterior side decided
by the method, not given) and compares with the angles the phantom was drawn with
(``geometry["c2c7_cobb_deg"]``, ``geometry["adjacent_endplate_angles_deg"]``). Prints mean, 95th
percentile and max of the absolute errors per style and angle kind, lists the worst cases, and
writes one row per phantom and angle to ``--out``/errors.csv and the summary to summary.csv.

Shapes the project did not draw (#15): ``--rect-n`` columns of rotated rectangles drawn with PIL by
``tests/rect_columns.py`` (six bodies, C2 taller, tilts −25…+20°, 384 px), measured with
:func:`cervkit.measure`. Their C2–C7 Cobb error is taken against the polygons PIL filled (whole-pixel
corners) and, to show what PIL's rounding alone costs, against the unrounded rectangles; with the number
of maps flagged ``levels_unsure`` it goes to rect_errors.csv, rect_summary.csv and rectangles.png.

    OMP_NUM_THREADS=1 python benchmarks/bench_measure.py --n 200 --size 512 --rect-n 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STYLES = ("xray", "mri")
TESTS = Path(__file__).resolve().parents[1] / "tests"


def phantom_errors(style: str, seed: int, size: int) -> list[dict[str, Any]]:
    """Measured minus true angles of one phantom: the Cobb angle and every adjacent pair.

    Parameters
    ----------
    style : {"xray", "mri"}
        Phantom style.
    seed : int
        Phantom seed.
    size : int
        Image side in px.

    Returns
    -------
    list of dict
        One row per angle: style, seed, kind (``cobb`` or ``adjacent``), pair, true, measured,
        error (measured − true, NaN when not measured), anterior side right, levels right.
    """
    from cervkit.data.synth.phantom import make_phantom
    from cervkit.measurements.spine import measure_spine

    ph = make_phantom(style, seed=seed, size=(size, size))
    geo = ph.geometry
    spine = measure_spine(ph.labels, ph.spacing_mm)
    truth_levels = {int(v): k for k, v in geo["label_of_level"].items()}
    common = {"style": style, "seed": seed,
              "side_right": spine["anterior_side"] == geo["anterior_side"],
              "levels_right": {int(k): v for k, v in spine["levels"].items()} == truth_levels}
    pairs = [("cobb", "C2-C7", geo["c2c7_cobb_deg"], spine["c2c7_cobb_deg"])]
    pairs += [("adjacent", key, true, spine["adjacent_endplate_angles_deg"].get(key))
              for key, true in geo["adjacent_endplate_angles_deg"].items()]
    return [{**common, "kind": kind, "pair": pair, "true_deg": float(true),
             "measured_deg": float("nan") if got is None else float(got),
             "error_deg": float("nan") if got is None else float(got) - float(true)}
            for kind, pair, true, got in pairs]


def summarise(errors: pd.DataFrame) -> pd.DataFrame:
    """Mean, 95th percentile and max absolute error per style and angle kind.

    Parameters
    ----------
    errors : pandas.DataFrame
        Rows of :func:`phantom_errors`.

    Returns
    -------
    pandas.DataFrame
        Columns style, kind, n, not_measured, mean_abs_deg, p95_abs_deg, max_abs_deg.
    """
    rows = []
    for (style, kind), group in errors.groupby(["style", "kind"], sort=False):
        err = group["error_deg"].abs()
        rows.append({"style": style, "kind": kind, "n": int(len(group)),
                     "not_measured": int(err.isna().sum()),
                     "mean_abs_deg": round(float(err.mean()), 3),
                     "p95_abs_deg": round(float(np.nanpercentile(err, 95)), 3),
                     "max_abs_deg": round(float(err.max()), 3)})
    return pd.DataFrame(rows)


def rectangle_errors(seed: int) -> dict[str, Any]:
    """Measured minus true C2–C7 Cobb angle of one PIL rectangle column (``tests/rect_columns.py``).

    Parameters
    ----------
    seed : int
        Column seed.

    Returns
    -------
    dict
        seed, true (from the drawn polygons), measured, error, error against the unrounded rectangles
        (NaN when not measured), levels_unsure, levels right, anterior side right.
    """
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from rect_columns import rectangle_column

    from cervkit.api import measure
    from cervkit.measurements.levels import CERVICAL_LEVELS

    labels, geo = rectangle_column(seed)
    row, _ = measure(labels)
    got = float("nan") if row["c2c7_cobb_deg"] is None else float(row["c2c7_cobb_deg"])
    return {"seed": seed, "true_deg": geo["c2c7_cobb_deg"], "measured_deg": got,
            "error_deg": got - geo["c2c7_cobb_deg"],
            "error_vs_unrounded_deg": got - (geo["tilts_deg"][0] - geo["tilts_deg"][-1]),
            "levels_unsure": bool(row["levels_unsure"]),
            "levels_right": row["levels"] == " ".join(CERVICAL_LEVELS),
            "side_right": row["anterior_side"] == geo["side"]}


def rectangles(n: int, out: Path) -> pd.DataFrame:
    """Cobb errors on ``n`` PIL rectangle columns: CSV files, a figure, and the summary.

    Parameters
    ----------
    n : int
        Columns (seeds 0 … n−1).
    out : pathlib.Path
        Folder for rect_errors.csv, rect_summary.csv and rectangles.png.

    Returns
    -------
    pandas.DataFrame
        One row per ground truth (drawn polygons, unrounded rectangles): n, levels_unsure,
        not_measured, mean_abs_deg, p95_abs_deg, max_abs_deg.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = pd.DataFrame([rectangle_errors(seed) for seed in range(n)])
    rows = []
    for truth, col in (("drawn polygons", "error_deg"), ("unrounded rectangles", "error_vs_unrounded_deg")):
        err = errors[col].abs()
        rows.append({"truth": truth, "n": n, "levels_unsure": int(errors["levels_unsure"].sum()),
                     "not_measured": int(err.isna().sum()), "mean_abs_deg": round(float(err.mean()), 3),
                     "p95_abs_deg": round(float(np.nanpercentile(err, 95)), 3),
                     "max_abs_deg": round(float(err.max()), 3)})
    summary = pd.DataFrame(rows)
    errors.to_csv(out / "rect_errors.csv", index=False)
    summary.to_csv(out / "rect_summary.csv", index=False)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.8))
    ax0.scatter(errors["true_deg"], errors["measured_deg"], s=8)
    lim = [errors["true_deg"].min() - 2, errors["true_deg"].max() + 2]
    ax0.plot(lim, lim, "k--", lw=0.8)
    ax0.set(xlabel="drawn C2–C7 Cobb (deg)", ylabel="measured (deg)", title=f"{n} PIL rectangle columns")
    bins = np.linspace(-3.5, 3.5, 57)
    ax1.hist(errors["error_vs_unrounded_deg"].dropna(), bins=bins, alpha=0.5, label="vs unrounded rectangles")
    ax1.hist(errors["error_deg"].dropna(), bins=bins, alpha=0.7, label="vs drawn polygons")
    ax1.set(xlabel="Cobb error (deg)", ylabel="columns", title="measured − true")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rectangles.png", dpi=120)
    plt.close(fig)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="phantoms per style")
    parser.add_argument("--seed0", type=int, default=0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", default="outputs/bench_measure")
    parser.add_argument("--worst", type=int, default=8, help="worst cases to print")
    parser.add_argument("--rect-n", type=int, default=200, help="PIL rectangle columns (0: none)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.rect_n:
        start = time.perf_counter()
        summary = rectangles(args.rect_n, out)
        print(f"{args.rect_n} PIL rectangle columns, {time.perf_counter() - start:.0f} s")
        print(summary.to_string(index=False))
    if not args.n:
        return 0
    start = time.perf_counter()
    rows = [row for i, style in enumerate(STYLES)
            for seed in range(args.seed0 + i * args.n, args.seed0 + (i + 1) * args.n)
            for row in phantom_errors(style, seed, args.size)]
    errors = pd.DataFrame(rows)
    summary = summarise(errors)
    errors.to_csv(out / "errors.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    print(f"{args.n} phantoms per style, {args.size} px, {time.perf_counter() - start:.0f} s")
    print(summary.to_string(index=False))
    print("anterior side right:", int(errors.groupby(["style", "seed"])["side_right"].first().sum()),
          "levels right:", int(errors.groupby(["style", "seed"])["levels_right"].first().sum()),
          "of", 2 * args.n)
    worst = errors.assign(abs_err=errors["error_deg"].abs()).sort_values("abs_err", ascending=False)
    print(worst.head(args.worst)[["style", "seed", "kind", "pair", "true_deg", "measured_deg",
                                  "error_deg"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
