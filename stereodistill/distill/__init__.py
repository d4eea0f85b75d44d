"""StereoDistill's response-distillation losses and LIGA's feature imitation as pure tensor functions
(docs/METHOD.md §5.2, §5.4, §5.8).

- ``pilots``: XGD component pilots and their IoU with the GT (closed forms; exact rotated IoU for the heading);
- ``xgd``: X-component Guided Distillation (regression) and the whole-box threshold baseline;
- ``cld``: Cross-anchor Logit Distillation (classification) and its region masks;
- ``imitation``: LIGA-Stereo's BEV feature imitation (the student's adapted BEV features onto the teacher's);
- ``components``, ``settings``: the box components and the ``distill`` settings (torch-free).
"""
