"""The LIGA-Stereo-style stereo student network (see :mod:`stereodistill.student.model`)."""
