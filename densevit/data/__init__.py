"""Datasets, transforms and collate functions: files on disk -> ``(image, target)`` samples."""

# Picture files found in folders given to datasets and ``densevit predict`` (Pillow reads them all).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
