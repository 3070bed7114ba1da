"""Scoring predictions: metrics, instance matching, evaluation of a model, comparisons, k-fold CV.

Modules
-------
* ``metrics``: Dice, IoU, PPV, sensitivity, HD, HD95
* ``matching``: per-vertebra matching and scores
* ``evaluate``: a predictor on a manifest
* ``compare``: Table 2 and paired tests
* ``figures``: box plots and Figure 5
* ``report``: write a comparison to disk
* ``crossval``: k-fold cross-validation by patient

This ``__init__`` imports nothing; import from the modules.
"""
