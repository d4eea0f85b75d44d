"""KITTI-format data: labels, the raw-dataset reader, the synthetic generator and the prepared HDF5 splits."""
