"""StereoDistill: LiDAR-teacher -> stereo-student response distillation with a cached teacher."""

__version__ = "0.1.0"
