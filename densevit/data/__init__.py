"""Datasets, transforms and collate functions: files on disk -> ``(image, target)`` samples."""
import os

# albumentations asks PyPI for a newer version each time it is imported; densevit never goes
# on the network unless the user asks for something by name.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Picture files found in folders given to datasets and ``densevit predict`` (Pillow reads them all).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
