"""Every trainer, and what only training needs. Nothing in cervkit.inference imports this package.

Modules
-------
* ``train``: ``python -m cervkit train``: all stages of a model into a run folder
* ``detector``: stage 1, YOLOv11 with ultralytics
* ``segmenter``: stage 2, the crop segmenter
* ``whole_image``: the whole-image baselines
* ``yolo_seg``: the YOLOv11-seg baseline
* ``crop_dataset, yolo_dataset``: training data sets
* ``finetune``: ``train --resume`` plans
* ``mixed_precision``: the AMP step (float16 + GradScaler on CUDA, bfloat16 on CPU)

This ``__init__`` imports nothing; import from the modules.
"""
