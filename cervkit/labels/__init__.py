"""Label maps and what is derived from them: instances, boxes, YOLO label files, crops.

Modules
-------
* ``instances``: label map ↔ instances ↔ boxes, top-to-bottom order
* ``yolo``: YOLO detection and segmentation label files
* ``crops``: the crop window around a box and the crop normalisation, shared by training and inference

This ``__init__`` imports nothing; import from the modules.
"""
