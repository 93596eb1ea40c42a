"""Datasets, transforms and collate functions: files on disk -> ``(image, target)`` samples."""
