"""Turning images into label maps with trained models; never imports cervkit.training.

Modules
-------
* ``registry``: load a run folder as a predictor
* ``detector``: stage 1, the YOLOv11 detector and its input normalisation
* ``segmenter``: stage 2, crop → mask
* ``cascade``: boxes → crops → masks → one label map
* ``level_boxes``: one box per level
* ``whole_image, yolo_seg``: the one-stage baselines' predictors
* ``predict``: batch prediction over folders
* ``batch_rows``: predictions.csv and queue.csv
* ``confidence``: per-image confidence for the correction queue

This ``__init__`` imports nothing; import from the modules.
"""
