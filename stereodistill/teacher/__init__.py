"""The LiDAR teacher: voxelisation, SECOND-style sparse 3D backbone, BEV backbone and the shared anchor head."""
