"""Segmentation models: U-Net3+ on smp encoders, DeepLabV3+, their losses and checkpoints.

This ``__init__`` imports nothing: import from the modules below (torch and segmentation-models-pytorch load
with them).

Modules
-------
``unet3plus``
    :class:`UNet3Plus` (full-scale skips, deep supervision, optional classification-guided module).
``losses``
    :func:`dice_loss`, :func:`bce_dice_loss`, :func:`deep_supervision_loss`.
``factory``
    :func:`build_segmentation_model`, :func:`model_summary`, :func:`save_checkpoint`, :func:`load_checkpoint`.
``encoders``
    :func:`build_encoder` (offline smp encoders with optional local weights), :class:`EncoderWeightsError`.
"""
