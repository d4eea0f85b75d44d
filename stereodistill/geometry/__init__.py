"""Frames, calibration, boxes, rotated IoU and NMS. See ``docs/ARCHITECTURE.md`` for conventions."""
