"""The shipped models' recipes as data: sources, settings, intended use and limits; their test images.

Read by :mod:`cervkit.zoo.recipes` (which trains) and by :func:`test_manifest` (which rebuilds a model's
held-out test set from its card, e.g. for a notebook or CI). Nothing here imports training code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["RECIPES", "Recipe", "Source", "recipe_split", "source_manifest", "test_manifest"]


@dataclass(frozen=True)
class Source:
    """One data source of a recipe.

    Attributes
    ----------
    name : str
        A data set of ``data_manifest.csv`` (real) or a name for generated phantoms.
    phantoms : dict, optional
        For generated phantoms: ``style``, ``n``, ``n_patients``, ``seed``, ``size`` of
        :func:`cervkit.data.synth.dataset.write_phantom_dataset`.
    """

    name: str
    phantoms: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a shipped model.

    Attributes
    ----------
    name, modality, summary : str
    sources : tuple of Source
    detector, segmenter, anchor : dict
        Keyword arguments of :func:`cervkit.training.detector.train_detector` /
        :func:`cervkit.training.segmenter.train_segmenter` / :func:`cervkit.training.anchor.train_anchor`.
    seed : int
    intended_use, limits : tuple of str
    """

    name: str
    modality: str
    summary: str
    sources: tuple[Source, ...]
    detector: Mapping[str, Any]
    segmenter: Mapping[str, Any]
    seed: int = 0
    anchor: Mapping[str, Any] = field(default_factory=dict)
    intended_use: tuple[str, ...] = ()
    limits: tuple[str, ...] = ()
    quick: Mapping[str, Any] = field(default_factory=dict)


_COMMON_LIMITS = (
    "No annotated real cervical image was available to train on: cervical performance is measured on "
    "synthetic phantoms only. Check it on your own images (the editor's correction queue) and fine-tune "
    "(`python -m cervkit train --resume NAME`).",
    "Research use only; not a medical device.",
)

RECIPES: dict[str, Recipe] = {
    "mri": Recipe(
        name="mri", modality="MRI",
        summary="Sagittal MRI vertebral bodies (cervical and lumbar), YOLO-UNet",
        sources=(Source("mri_lumbar_t2"), Source("mri_lumbar_dixon"),
                 Source("phantoms_mri", {"style": "mri", "n": 60, "n_patients": 20, "seed": 1, "size": (384, 384)})),
        detector={"classes": "single", "imgsz": 320, "epochs": 120, "patience": 25, "batch": 16,
                  "zoom_copies": (0.5, 2.0), "max_minutes": 30},
        segmenter={"epochs": 60, "patience": 20, "max_minutes": 18},
        anchor={"epochs": 40, "patience": 12},
        intended_use=("Pre-annotating sagittal T1/T2/Dixon MRI slices for correction in the editor.",
                      "A starting point for fine-tuning on one's own scanner."),
        limits=_COMMON_LIMITS + ("Real training data: two lumbar sources (T2 TSE, one scanner; water-fat "
                                 "Dixon, another scanner), healthy adults.",),
        quick={"phantoms_n": 9, "phantoms_patients": 3, "real_patients": 3, "detector_epochs": 1,
               "segmenter_epochs": 1},
    ),
    "xray": Recipe(
        name="xray", modality="XR",
        summary="Lateral cervical X-ray vertebral bodies C2–C7, YOLO-UNet",
        sources=(Source("phantoms_xray", {"style": "xray", "n": 90, "n_patients": 30, "seed": 0,
                                          "size": (384, 384)}),),
        detector={"classes": "single", "imgsz": 320, "epochs": 100, "patience": 20, "batch": 16,
                  "zoom_copies": (0.5, 2.0), "max_minutes": 20},
        segmenter={"epochs": 50, "patience": 15, "max_minutes": 8},
        anchor={"epochs": 40, "patience": 12},
        intended_use=("Pre-annotating lateral cervical radiographs (CR/DX) for correction in the editor.",),
        limits=_COMMON_LIMITS + ("Trained on synthetic X-ray phantoms only (incl. C7 behind the shoulders).",),
        quick={"phantoms_n": 9, "phantoms_patients": 3, "detector_epochs": 1, "segmenter_epochs": 1},
    ),
}
"""The shipped models' recipes, by name."""


def source_manifest(source: Source, work: Path, *, quick: bool, recipe: Recipe) -> Any:
    """The manifest of one recipe source, ``source`` column set to its data-set name.

    Parameters
    ----------
    source : Source
    work : pathlib.Path
        Where generated phantoms are written (``work/data/<name>``; reused when present).
    quick : bool
        The smoke-test size (a few patients).
    recipe : Recipe

    Returns
    -------
    Manifest

    Raises
    ------
    CervkitInputError
        A real source that ``CERVKIT_DATA_DIR`` does not provide.
    """
    from cervkit.data.datasets import get_dataset
    from cervkit.data.manifest import load_manifest
    from cervkit.data.synth.dataset import write_phantom_dataset

    if source.phantoms is None:
        manifest = load_manifest(get_dataset(source.name, quick=False))
        if quick:
            manifest = manifest.subset(patients=manifest.patients()[: recipe.quick.get("real_patients", 3)])
        manifest.df["source"] = source.name  # reported by data-set name (the CSV's own column names the study)
        return manifest
    spec = dict(source.phantoms)
    if quick:
        spec.update(n=recipe.quick.get("phantoms_n", 9), n_patients=recipe.quick.get("phantoms_patients", 3))
    folder = work / "data" / source.name
    if not (folder / "manifest.csv").is_file():
        write_phantom_dataset(folder, spec["n"], style=spec["style"], seed=spec["seed"], size=tuple(spec["size"]),
                              n_patients=spec["n_patients"])
    table = load_manifest(folder / "manifest.csv")
    table.df["source"] = source.name
    return table


def test_manifest(name: str, *, work_dir: str | PathLike[str] | None = None,
                  sources: Sequence[str] | None = None) -> Any:
    """The held-out test images a shipped model's card lists, as one manifest (``source``, ``split="test"``).

    Parameters
    ----------
    name : str
        A shipped model.
    work_dir : str or PathLike, optional
        Where generated phantoms go (default ``outputs/zoo_check/<name>``).
    sources : sequence of str, optional
        Only these sources (default: every source on the card).

    Returns
    -------
    Manifest
        Not saved; its images are the card's test images of the chosen sources (:func:`recipe_split`'s test part).
    """
    split = recipe_split(name, work_dir=work_dir, sources=sources)
    return split.with_df(split.df[split.df["split"] == "test"].reset_index(drop=True))


def recipe_split(name: str, *, work_dir: str | PathLike[str] | None = None,
                 sources: Sequence[str] | None = None) -> Any:
    """The patient split a shipped model was built with (train / val / test per source), recomputed.

    ``zoo build`` splits each source by patient with the recipe's seed; the same call on the same data gives the
    same split. It is checked against the card: the test images must be exactly the card's, else an error. Use it
    to train other models on the patients a shipped model trained on and to test them all on the patients it never
    saw (notebooks 05 and 06).

    Parameters
    ----------
    name : str
        A shipped model.
    work_dir : str or PathLike, optional
        Where generated phantoms go (default ``outputs/zoo_check/<name>``).
    sources : sequence of str, optional
        Only these sources (default: every source on the card).

    Returns
    -------
    Manifest
        Not saved; ``source`` and ``split`` columns.

    Raises
    ------
    CervkitInputError
        The recomputed test images differ from the card's (other data, or another cervkit split rule).
    """
    from cervkit.core.config import outputs_dir
    from cervkit.core.errors import CervkitInputError
    from cervkit.data.sources import combine_sources, split_sources
    from cervkit.zoo.store import card as read_card

    card = read_card(name)
    recipe = RECIPES[name]
    work = Path(work_dir) if work_dir is not None else outputs_dir() / "zoo_check" / name
    parts = []
    for source in recipe.sources:
        if sources is not None and source.name not in sources:
            continue
        table = source_manifest(source, work, quick=bool(card.get("quick_build")), recipe=recipe)
        split = split_sources(combine_sources([table], work), seed=recipe.seed)
        test = {f"{Path(p).parent.name}/{Path(p).name}" for p in split.df.loc[split.df["split"] == "test", "image"]}
        if test != set(card["test_images"].get(source.name, [])):
            raise CervkitInputError(f"the recomputed split of {source.name} does not give the test images on "
                                    f"{name}'s card; the data or the split rule changed", work)
        parts.append(split)
    return combine_sources(parts, work) if len(parts) != 1 else parts[0]
