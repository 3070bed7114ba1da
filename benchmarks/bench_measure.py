"""Issue 6's angle accuracy: C2–C7 Cobb and adjacent endplate angles against the phantoms' geometry.

Draws ``--n`` phantoms per style at ``--size`` px (X-ray: seeds ``--seed0`` …, MRI: the next
``--n`` seeds, since a seed's label map and angles are the same in both styles), measures
each true label map with :func:`cervkit.measurements.spine.measure_spine` (levels and anterior side decided
by the method, not given) and compares with the angles the phantom was drawn with
(``geometry["c2c7_cobb_deg"]``, ``geometry["adjacent_endplate_angles_deg"]``). Prints mean, 95th
percentile and max of the absolute errors per style and angle kind, lists the worst cases, and
writes one row per phantom and angle to ``--out``/errors.csv and the summary to summary.csv.

    OMP_NUM_THREADS=1 python benchmarks/bench_measure.py --n 200 --size 512
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STYLES = ("xray", "mri")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="phantoms per style")
    parser.add_argument("--seed0", type=int, default=0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", default="outputs/bench_measure")
    parser.add_argument("--worst", type=int, default=8, help="worst cases to print")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = [row for i, style in enumerate(STYLES)
            for seed in range(args.seed0 + i * args.n, args.seed0 + (i + 1) * args.n)
            for row in phantom_errors(style, seed, args.size)]
    errors = pd.DataFrame(rows)
    summary = summarise(errors)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
