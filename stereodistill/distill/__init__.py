"""StereoDistill's response-distillation losses as pure tensor functions (METHOD.md §1.3, §1.4).

- ``pilots``: XGD component pilots and their IoU with the GT (closed forms; exact rotated IoU for the heading);
- ``xgd``: X-component Guided Distillation (regression) and the whole-box threshold baseline;
- ``cld``: Cross-anchor Logit Distillation (classification) and its region masks.
"""

from stereodistill.distill.cld import (
    CellLayout,
    CldOptions,
    CldResult,
    all_cells,
    cell_centres,
    cell_kl,
    cell_logits,
    cells_in_boxes,
    cld_loss,
    confident_cells,
)
from stereodistill.distill.pilots import (
    components,
    heading_nearest_mod_pi,
    pilot_boxes,
    pilot_ious,
)
from stereodistill.distill.xgd import (
    DEFAULT_THRESHOLDS,
    DistillResult,
    XgdOptions,
    masked_code_loss,
    threshold_table,
    whole_box_keep_mask,
    whole_box_loss,
    xgd_keep_mask,
    xgd_loss,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "CellLayout",
    "CldOptions",
    "CldResult",
    "DistillResult",
    "XgdOptions",
    "all_cells",
    "cell_centres",
    "cell_kl",
    "cell_logits",
    "cells_in_boxes",
    "cld_loss",
    "components",
    "confident_cells",
    "heading_nearest_mod_pi",
    "masked_code_loss",
    "pilot_boxes",
    "pilot_ious",
    "threshold_table",
    "whole_box_keep_mask",
    "whole_box_loss",
    "xgd_keep_mask",
    "xgd_loss",
]
