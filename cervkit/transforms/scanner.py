"""Intensity augmentation against other scanners and sequences, for ultralytics' detector training.

``benchmarks/bench_robustness.py`` showed the cascade's weak stage under simulated scanner shifts
(:mod:`cervkit.transforms.shift`) is the detector: it reads raw intensities, while the segmenter normalises each
crop and already trains with gamma, noise, blur and inversion (:mod:`cervkit.training.crop_dataset`). With the
paper's augmentation only, a T1-like contrast, an inverted image, gamma 2, a narrow window or Rician
noise σ = 0.1 left it finding almost no vertebra although the segmenter on the true boxes stayed
above Dice 0.93.

:func:`detector_transforms` is the list handed to ultralytics' ``augmentations`` training argument
(applied to the uint8 3-channel training images after mosaic / affine):

* :class:`RandomIntensityCurve` — a random, possibly **non-monotone** intensity curve through knots
  at random quantiles of each image (air kept dark). It contains T1-like contrasts (fluid dark, marrow
  bright) among many others, without being the exact remap the benchmark evaluates with
  (:func:`cervkit.transforms.shift.t1_like`);
* inversion, wide gamma (0.4–2.5), brightness / contrast, :class:`RicianNoise` (σ 0.01–0.1), and blur
  or down-up resampling (other resolutions).

The classes are albumentations ``ImageOnlyTransform`` subclasses in an importable module, so
ultralytics can store them in checkpoints (``A.to_dict``) and rebuild them (``A.from_dict``).
Importing this module imports albumentations (without its online version check).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cervkit.transforms.augment import albumentations_module

A = albumentations_module()

#: Probability of each intensity augmentation in :func:`detector_transforms` (the curve, the rest scaled).
DETECTOR_INTENSITY_P = 0.3


def _as_gray_float(img: np.ndarray) -> tuple[np.ndarray, Any]:
    """Gray float [0, 1] of a uint8 / float image with 1 or 3 channels, and how to convert back."""
    arr = np.asarray(img)
    gray = arr.mean(axis=2) if arr.ndim == 3 else arr
    if arr.dtype == np.uint8:
        gray = gray / 255.0

    def back(out: np.ndarray) -> np.ndarray:
        out = np.clip(out, 0.0, 1.0)
        res = np.round(out * 255.0).astype(np.uint8) if arr.dtype == np.uint8 else out.astype(arr.dtype)
        return np.repeat(res[..., None], arr.shape[2], axis=2) if arr.ndim == 3 else res

    return gray.astype(np.float32), back


class RandomIntensityCurve(A.ImageOnlyTransform):
    """Remap intensities by a random piecewise-linear curve with knots at image quantiles.

    Knots: input ``0`` → ``0`` (air stays dark), the image's quantiles ``q1 ~ U(0.4, 0.6)``,
    ``q2 ~ U(0.7, 0.9)``, ``q3 ~ U(0.93, 0.99)`` and ``1`` → outputs drawn uniformly from
    ``out_range`` (the last from [0, 1]), then scaled so the largest knot is 1. Non-monotone curves
    (e.g. bright marrow, dark fluid: a T1-like look) are as likely as monotone ones.

    Parameters
    ----------
    out_range : tuple of float
        Range of the inner knots' outputs.
    p : float
        Probability of applying it.
    """

    def __init__(self, out_range: tuple[float, float] = (0.1, 1.0), p: float = 0.5) -> None:
        super().__init__(p=p)
        self.out_range = (float(out_range[0]), float(out_range[1]))

    def get_params(self) -> dict[str, Any]:
        """Draw one curve from the transform's random generator.

        Returns
        -------
        dict
            ``quantiles`` (3,) of the inner knots and ``outputs`` (5,) of all knots, largest 1.
        """
        rng = self.random_generator
        quantiles = np.array([rng.uniform(0.4, 0.6), rng.uniform(0.7, 0.9), rng.uniform(0.93, 0.99)])
        outputs = np.concatenate([[0.0], rng.uniform(*self.out_range, size=3), [rng.uniform(0.0, 1.0)]])
        return {"quantiles": quantiles, "outputs": outputs / max(float(outputs.max()), 1e-3)}

    def apply(self, img: np.ndarray, quantiles: np.ndarray = None, outputs: np.ndarray = None,
              **params: Any) -> np.ndarray:
        """Remap ``img`` through the drawn curve.

        Parameters
        ----------
        img : numpy.ndarray
            uint8 or float image, gray (H, W) or (H, W, 3) (channels are averaged, then repeated).
        quantiles, outputs : numpy.ndarray
            The curve from :meth:`get_params`.
        **params
            Other albumentations parameters (unused).

        Returns
        -------
        numpy.ndarray
            The remapped image, ``img``'s dtype and shape.
        """
        gray, back = _as_gray_float(img)
        knots = np.concatenate([[0.0], np.quantile(gray, quantiles), [1.0]])
        knots = np.maximum.accumulate(knots + np.arange(5) * 1e-4)  # strictly increasing for np.interp
        return back(np.interp(gray, knots, outputs))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Constructor arguments albumentations serialises (besides ``p``).

        Returns
        -------
        tuple of str
            ``("out_range",)``.
        """
        return ("out_range",)


class RicianNoise(A.ImageOnlyTransform):
    """Magnitude-image noise ``|x + σ(n₁ + i n₂)|`` with σ drawn from ``sigma_range`` (image in [0, 1]).

    Parameters
    ----------
    sigma_range : tuple of float
        Range of σ.
    p : float
        Probability of applying it.
    """

    def __init__(self, sigma_range: tuple[float, float] = (0.01, 0.1), p: float = 0.5) -> None:
        super().__init__(p=p)
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))

    def get_params(self) -> dict[str, Any]:
        """Draw σ and a noise seed from the transform's random generator.

        Returns
        -------
        dict
            ``sigma`` (float) and ``seed`` (int).
        """
        return {"sigma": self.random_generator.uniform(*self.sigma_range),
                "seed": int(self.random_generator.integers(2**31))}

    def apply(self, img: np.ndarray, sigma: float = 0.0, seed: int = 0, **params: Any) -> np.ndarray:
        """Add Rician noise to ``img``.

        Parameters
        ----------
        img : numpy.ndarray
            uint8 or float image, gray (H, W) or (H, W, 3) (channels are averaged, then repeated).
        sigma : float
            Noise standard deviation (image in [0, 1]).
        seed : int
            Seed of the noise.
        **params
            Other albumentations parameters (unused).

        Returns
        -------
        numpy.ndarray
            The noisy image clipped to [0, 1], ``img``'s dtype and shape.
        """
        gray, back = _as_gray_float(img)
        n1, n2 = np.random.default_rng(seed).standard_normal((2, *gray.shape)).astype(np.float32)
        return back(np.sqrt((gray + sigma * n1) ** 2 + (sigma * n2) ** 2))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Constructor arguments albumentations serialises (besides ``p``).

        Returns
        -------
        tuple of str
            ``("sigma_range",)``.
        """
        return ("sigma_range",)


def detector_transforms(p: float = DETECTOR_INTENSITY_P) -> list[Any]:
    """The scanner / sequence augmentations for ultralytics' ``augmentations`` argument.

    Parameters
    ----------
    p : float
        Probability of the intensity curve and of each other step (inversion: ``p / 3``); 0 gives [].

    Returns
    -------
    list of albumentations transforms
        Image-only; boxes are untouched.
    """
    if p <= 0:
        return []
    return [
        RandomIntensityCurve(p=p),
        A.InvertImg(p=p / 3),
        A.RandomGamma(gamma_limit=(40, 250), p=p),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=(-0.5, 0.8), p=p),
        RicianNoise(sigma_range=(0.01, 0.1), p=p),
        A.OneOf([A.GaussianBlur(blur_limit=0, sigma_limit=(0.5, 2.0)),
                 A.Downscale(scale_range=(0.3, 0.8))], p=p),
    ]
