"""The ``distill`` section of params.yaml: XGD (regression), CLD (classification) and LIGA-Stereo's feature
imitation; ``mode: off`` for all three is the GT-only baseline. Defaults are params.yaml's values. Imports no torch
(see :mod:`stereodistill.settings`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from stereodistill.distill.components import IOU_KINDS, SPLITS, Split, components
from stereodistill.settings import OMIT_AT_DEFAULT, fail

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.7, 0.5, 0.5)
DEFAULT_BETA = 1.0 / 9.0
XGD_MODES = ("xgd", "whole_box", "off")
CldMode = Literal["diagonal", "all", "per_class"]
CLD_MODES: tuple[str, ...] = ("diagonal", "all", "per_class")
CLD_REGIONS = ("gt_boxes", "confident", "all")
IMITATION_MODES = ("off", "bev")


def threshold_classes(thresholds: Any, split: Split) -> int:
    """How many classes XGD ``thresholds`` cover; ``ValueError`` when they do not fit ``split``.

    ``thresholds``: one sequence ``(C,)`` for every component, a ``(K, C)`` nested sequence (or array / tensor),
    or a mapping naming exactly the components of ``split``, each ``(C,)``.
    """
    names = list(components(split))
    if isinstance(thresholds, Mapping):
        missing = [n for n in names if n not in thresholds]
        unknown = [n for n in thresholds if n not in names]
        if missing or unknown:
            raise ValueError(
                f"thresholds for split {split!r} must name exactly the components {names}; "
                f"missing {missing}, unknown {unknown}"
            )
        lengths = [math.prod(_shape(thresholds[n])) for n in names]
        if len(set(lengths)) != 1:
            raise ValueError(f"every component needs the same number of class thresholds, got {lengths}")
        classes = lengths[0]
    else:
        shape = _shape(thresholds)
        if len(shape) == 2 and shape[0] == len(names):
            classes = shape[1]
        elif len(shape) == 1:
            classes = shape[0]
        else:
            raise ValueError(
                f"thresholds must have shape (C,) or ({len(names)}, C) for split {split!r}, got {shape}"
            )
    if classes == 0:
        raise ValueError("thresholds need at least one class")
    return classes


def _shape(values: Any) -> tuple[int, ...]:
    """The shape of a number, an array-like or a rectangular nested sequence of numbers."""
    if hasattr(values, "shape"):
        return tuple(int(n) for n in values.shape)
    if isinstance(values, int | float) and not isinstance(values, bool):
        return ()
    if isinstance(values, Sequence) and not isinstance(values, str):
        inner = {_shape(v) for v in values}
        if len(inner) > 1:
            raise ValueError(f"thresholds must be rectangular, got {values!r}")
        return (len(values), *(inner.pop() if inner else ()))
    raise ValueError(f"thresholds must be numbers, got {values!r}")


@dataclass(frozen=True)
class XgdSettings:
    """``distill.xgd``: ``mode`` xgd | whole_box | off; thresholds per class in grid order (or per component)."""

    mode: str = "xgd"
    split: str = "groups"  # groups (centre, size, heading) or scalars (x, y, z, l, w, h, heading)
    iou: str = "3d"  # 3d or bev pilot IoU
    thresholds: tuple[float, ...] | dict[str, tuple[float, ...]] = DEFAULT_THRESHOLDS
    beta: float = DEFAULT_BETA
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in XGD_MODES:
            fail("mode", f"expected one of {', '.join(XGD_MODES)}, got {self.mode!r}")
        if self.split not in SPLITS:
            fail("split", f"expected one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.iou not in IOU_KINDS:
            fail("iou", f"expected 3d or bev, got {self.iou!r}")
        if self.mode == "whole_box" and isinstance(self.thresholds, Mapping):
            fail("thresholds", "whole_box needs one threshold per class, not per component")
        if not self.beta >= 0:
            fail("beta", f"must be >= 0, got {self.beta}")
        try:
            self.num_classes()
        except ValueError as err:
            fail("thresholds", str(err))

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def num_classes(self) -> int:
        return threshold_classes(self.thresholds, self.split)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CldSettings:
    """``distill.cld``: ``mode`` diagonal | all | per_class | off; ``region`` a list of gt_boxes/confident/all
    (one region may be given as a string)."""

    mode: str = "diagonal"
    temperature: float = 1.0
    region: tuple[str, ...] | str = ("gt_boxes", "confident")
    confident_threshold: float = 0.1
    weight: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.region, str):
            object.__setattr__(self, "region", (self.region,))
        if self.mode not in (*CLD_MODES, "off"):
            fail("mode", f"expected one of {', '.join((*CLD_MODES, 'off'))}, got {self.mode!r}")
        if not self.temperature > 0:
            fail("temperature", f"must be > 0, got {self.temperature}")
        bad = [r for r in self.region if r not in CLD_REGIONS]
        if bad or not self.region:
            fail("region", f"expected a non-empty list of {', '.join(CLD_REGIONS)}, got {list(self.region)}")
        if not 0 < self.confident_threshold < 1:
            fail("confident_threshold", f"must lie in (0, 1), got {self.confident_threshold}")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True)
class ImitationSettings:
    """``distill.imitation``: LIGA-Stereo's feature imitation; ``mode`` off | bev (the student's BEV features,
    through a 1x1 adapter, regressed onto the teacher's cached BEV features at the cells inside GT boxes)."""

    mode: str = "off"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in IMITATION_MODES:
            fail("mode", f"expected one of {', '.join(IMITATION_MODES)}, got {self.mode!r}")
        if not self.weight >= 0:
            fail("weight", f"must be >= 0, got {self.weight}")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True)
class DistillSettings:
    """The ``distill`` section: ``xgd``, ``cld`` and ``imitation``; any of them on needs the teacher cache."""

    xgd: XgdSettings = XgdSettings()
    cld: CldSettings = CldSettings()
    # Left out of stored settings while off, so runs recorded before the field existed still compare equal.
    imitation: ImitationSettings = field(default=ImitationSettings(), metadata=OMIT_AT_DEFAULT)

    @property
    def enabled(self) -> bool:
        return self.xgd.enabled or self.cld.enabled or self.imitation.enabled
