"""The detection head shared by the LiDAR teacher and the stereo student.

One small module per job: ``anchors`` (the anchor grid and its order), ``box_coder`` (residual codes and the
direction bins), ``assigner`` (training targets), ``anchor_head`` (the ``nn.Module``), ``losses`` (SECOND's
losses), ``decode`` (post-processing to detections and KITTI results) and ``settings`` (its settings, torch-free).
"""
