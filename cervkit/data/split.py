"""Patient-level train/val/test splits, k-fold assignment and split summaries.

Whole patients go to one part, so no patient's images are seen in training and
scored in testing. Rounding is by **largest remainder**: each part first gets
``floor(n * ratio)`` patients and the patients left over go, one each, to the
parts with the largest fractional remainders (14 patients at 6:2:2 →
8.4/2.8/2.8 → 8/3/3). With at least as many patients as parts of non-zero
ratio, every such part gets at least one patient (taken from the largest part).
With several modalities (``stratify_by``), each modality's patients are split
on their own, so every part holds every modality; ties in the remainders are
then broken toward the part that is furthest behind its overall target.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from cervkit.core.errors import CervkitInputError
from cervkit.data.checks import check_no_leak
from cervkit.data.table import SPLITS, Manifest, is_blank


def largest_remainder(n: int, ratios: Sequence[float],
                      deficit: Sequence[float] | None = None) -> list[int]:
    """Share ``n`` items between parts in proportion to ``ratios`` (largest remainder).

    Parameters
    ----------
    n : int
        Items to share.
    ratios : sequence of float
        Non-negative weights, normalised here.
    deficit : sequence of float, optional
        Tie-breaker among equal remainders: larger deficit first (then lower index).

    Returns
    -------
    list of int
        Counts summing to ``n``; each within one of ``n * ratio``, except that
        when ``n`` is at least the number of non-zero ratios each of those parts
        gets at least one (taken from the largest part).
    """
    weights = np.asarray(ratios, dtype=float)
    weights = weights / weights.sum()
    exact = n * weights
    counts = [int(math.floor(v + 1e-9)) for v in exact]
    ties = deficit if deficit is not None else [0.0] * len(counts)
    order = sorted(range(len(counts)), key=lambda j: (-round(exact[j] - counts[j], 9), -ties[j], j))
    for j in order[: n - sum(counts)]:
        counts[j] += 1
    wanted = [j for j in range(len(counts)) if weights[j] > 0]
    if n >= len(wanted):
        for j in wanted:
            if counts[j] == 0:
                donor = max(range(len(counts)), key=lambda k: (counts[k], -k))
                counts[donor] -= 1
                counts[j] += 1
    return counts


def _strata(manifest: Manifest, stratify_by: str | None) -> dict[str, list[str]]:
    """Group patients by their (sorted, joined) values of ``stratify_by``."""
    df = manifest.df
    if "patient_id" not in df.columns:
        raise CervkitInputError("manifest has no patient_id column", manifest.path)
    values: dict[str, set[str]] = defaultdict(set)
    for i, patient in enumerate(df["patient_id"]):
        if is_blank(patient):
            raise CervkitInputError(f"{manifest.line(i)} has no patient_id", manifest.path)
        cell = df[stratify_by].iloc[i] if stratify_by and stratify_by in df.columns else ""
        values[str(patient)].add("" if is_blank(cell) else str(cell))
    strata: dict[str, list[str]] = defaultdict(list)
    for patient, found in values.items():
        strata["+".join(sorted(found))].append(patient)
    return {key: sorted(strata[key]) for key in sorted(strata)}


def split_by_patient(manifest: Manifest, ratios: Sequence[float] = (0.6, 0.2, 0.2), *,
                     seed: int = 0, stratify_by: str | None = "modality") -> Manifest:
    """Assign whole patients to train/val/test (column ``split``).

    Parameters
    ----------
    manifest : Manifest
        Needs ``patient_id``; an existing ``split`` column is replaced.
    ratios : sequence of 3 float, default (0.6, 0.2, 0.2)
        Train, val, test proportions of patients (normalised; zeros allowed).
    seed : int, default 0
        Shuffles patients; the same seed always gives the same split.
    stratify_by : str or None, default "modality"
        Split each value's patients separately (a patient with several values
        forms a stratum of its own combination). None or a missing column: no strata.

    Returns
    -------
    Manifest
        A copy with ``split`` filled (same root, ``path`` None).

    Raises
    ------
    CervkitInputError
        Bad ratios or a row without patient_id.
    """
    if len(ratios) != 3 or any(r < 0 or not math.isfinite(r) for r in ratios) or sum(ratios) <= 0:
        raise CervkitInputError(f"ratios must be 3 non-negative numbers with a positive sum, got {ratios}")
    weights = np.asarray(ratios, dtype=float) / sum(ratios)
    rng = np.random.default_rng(seed)
    part_of: dict[str, str] = {}
    assigned = np.zeros(3)
    seen = 0
    for patients in _strata(manifest, stratify_by).values():
        seen += len(patients)
        deficit = seen * weights - assigned
        counts = largest_remainder(len(patients), weights, deficit)
        order = [patients[j] for j in rng.permutation(len(patients))]
        start = 0
        for name, count in zip(SPLITS, counts):
            for patient in order[start:start + count]:
                part_of[patient] = name
            start += count
        assigned += counts
    df = manifest.df.copy()
    df["split"] = [part_of[str(p)] for p in df["patient_id"]]
    return Manifest(df.reset_index(drop=True), None, manifest.root)


def assign_folds(manifest: Manifest, k: int = 5, *, seed: int = 0,
                 exclude_split: str | None = "test", stratify_by: str | None = "modality") -> Manifest:
    """Assign whole patients to ``k`` folds with balanced image counts (column ``fold``).

    Like scikit-learn's GroupKFold: patients, largest first (ties in a seeded
    random order), each go to the fold with the fewest images so far (within
    their ``stratify_by`` stratum, then overall), so folds differ by at most
    about one patient's images and every fold holds every modality when it can.

    Parameters
    ----------
    manifest : Manifest
        Needs ``patient_id``; checked for split leaks first.
    k : int, default 5
        Number of folds, 2 … number of patients in the folds.
    seed : int, default 0
        Order of patients with equal image counts.
    exclude_split : str or None, default "test"
        Rows of this split get fold -1 (kept out of cross-validation).
    stratify_by : str or None, default "modality"
        Balance each value's patients across folds.

    Returns
    -------
    Manifest
        A copy with an integer ``fold`` column (0 … k-1, or -1), same root, ``path`` None.

    Raises
    ------
    CervkitInputError
        ``k`` < 2 or more than the patients to fold.
    ManifestError
        A patient in two splits.
    """
    check_no_leak(manifest.with_df(manifest.df.drop(columns=["fold"], errors="ignore")))
    df = manifest.df.reset_index(drop=True)
    excluded = (df["split"].astype(str) == exclude_split) if (
        exclude_split is not None and "split" in df.columns) else pd.Series(False, index=df.index)
    pool = manifest.with_df(df.loc[~excluded])
    strata = _strata(pool, stratify_by)
    n_patients = sum(len(p) for p in strata.values())
    if not 2 <= k <= n_patients:
        raise CervkitInputError(f"k={k} folds need 2 <= k <= {n_patients} (patients to fold)",
                                manifest.path)
    images = pool.df["patient_id"].astype(str).value_counts()
    rng = np.random.default_rng(seed)
    total = np.zeros(k, dtype=int)
    members = np.zeros(k, dtype=int)
    fold_of: dict[str, int] = {}
    for patients in strata.values():
        shuffled = [patients[j] for j in rng.permutation(len(patients))]
        ordered = sorted(shuffled, key=lambda p: -int(images[p]))  # stable: ties stay shuffled
        local = np.zeros(k, dtype=int)
        for patient in ordered:
            f = min(range(k), key=lambda j: (local[j], total[j], members[j], j))
            fold_of[patient] = f
            local[f] += images[patient]
            total[f] += images[patient]
            members[f] += 1
    out = df.copy()
    folds = [-1 if excluded.iloc[i] else fold_of[str(p)] for i, p in enumerate(df["patient_id"])]
    out["fold"] = pd.Series(folds, index=out.index, dtype="int64")
    return Manifest(out, None, manifest.root)


def kfold_splits(manifest: Manifest, k: int = 5, *, seed: int = 0,
                 exclude_split: str | None = "test") -> Iterator[tuple[Manifest, Manifest]]:
    """Yield (train, val) manifests for each of ``k`` patient-level folds.

    Parameters
    ----------
    manifest : Manifest
        With a ``fold`` column (used as it is; its folds must be 0 … k-1), or
        without (folds are assigned with :func:`assign_folds`).
    k : int, default 5
        Number of folds.
    seed : int, default 0
        Passed to :func:`assign_folds` when folds are assigned here.
    exclude_split : str or None, default "test"
        Passed to :func:`assign_folds`; rows with fold -1 or blank are in neither part.

    Yields
    ------
    tuple of Manifest
        (train: the other folds, val: fold ``i``) for i = 0 … k-1.

    Raises
    ------
    CervkitInputError
        An existing ``fold`` column whose folds are not 0 … k-1.
    ManifestError
        A patient in two folds or two splits.
    """
    if "fold" not in manifest.df.columns:
        manifest = assign_folds(manifest, k, seed=seed, exclude_split=exclude_split)
    check_no_leak(manifest)
    folds = pd.to_numeric(manifest.df["fold"], errors="coerce")
    present = sorted(int(f) for f in folds.dropna().unique() if f >= 0)
    if present != list(range(k)):
        raise CervkitInputError(f"fold column holds folds {present}, expected 0 … {k - 1}",
                                manifest.path)
    for f in range(k):
        val = (folds == f).to_numpy()
        train = ((folds >= 0) & (folds != f)).to_numpy()
        yield manifest.with_df(manifest.df.loc[train]), manifest.with_df(manifest.df.loc[val])


def summary(manifest: Manifest) -> pd.DataFrame:
    """Count images and patients per split and modality, for notebooks.

    Parameters
    ----------
    manifest : Manifest

    Returns
    -------
    pandas.DataFrame
        Columns ``split``, ``modality``, ``images``, ``patients``, ``labelled``
        (rows with a mask); one row per split (train, val, test, then others;
        ``"(none)"`` without a split column) and modality, then a total row
        ``("all", "all")``.
    """
    df = manifest.df
    split = (df["split"].astype(object).where(df["split"].notna(), "(blank)")
             if "split" in df.columns else pd.Series("(none)", index=df.index))
    modality = df["modality"].astype(object).where(df["modality"].notna(), "(blank)")
    labelled = df["mask"].map(lambda v: not is_blank(v)) if "mask" in df.columns else False
    frame = pd.DataFrame({"split": split.astype(str), "modality": modality.astype(str),
                          "patient_id": df["patient_id"], "labelled": labelled})
    order = {name: i for i, name in enumerate(SPLITS)}
    records = []
    for (part, mod), group in frame.groupby(["split", "modality"], sort=False):
        records.append({"split": part, "modality": mod, "images": len(group),
                        "patients": group["patient_id"].nunique(),
                        "labelled": int(group["labelled"].sum())})
    records.sort(key=lambda r: (order.get(r["split"], len(order)), r["split"], r["modality"]))
    records.append({"split": "all", "modality": "all", "images": len(frame),
                    "patients": frame["patient_id"].nunique(),
                    "labelled": int(frame["labelled"].sum())})
    return pd.DataFrame(records, columns=["split", "modality", "images", "patients", "labelled"])
