"""brainseg3d: MONAI-native brain tumour segmentation from multimodal MRI (BraTS regions).

Research use only; not a medical device.
"""

__version__ = "0.1.0"
