"""The components a box is split into for XGD (``groups`` or ``scalars``) and the pilot IoU kinds.

Torch-free: the ``distill`` settings check their thresholds against these before any work.
"""

from __future__ import annotations

from typing import Literal

Split = Literal["groups", "scalars"]
IouKind = Literal["3d", "bev"]

SPLITS: tuple[str, ...] = ("groups", "scalars")
IOU_KINDS: tuple[str, ...] = ("3d", "bev")

# Component name -> the box (and residual-code) entries it covers, in component order.
GROUP_COMPONENTS: dict[str, tuple[int, ...]] = {"centre": (0, 1, 2), "size": (3, 4, 5), "heading": (6,)}
SCALAR_COMPONENTS: dict[str, tuple[int, ...]] = {
    "x": (0,),
    "y": (1,),
    "z": (2,),
    "l": (3,),
    "w": (4,),
    "h": (5,),
    "heading": (6,),
}


def components(split: Split) -> dict[str, tuple[int, ...]]:
    """The components of ``split`` (``groups`` or ``scalars``): name -> code indices, in order."""
    if split == "groups":
        return dict(GROUP_COMPONENTS)
    if split == "scalars":
        return dict(SCALAR_COMPONENTS)
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
