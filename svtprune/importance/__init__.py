"""Channel importance: how much each channel of a group is worth keeping, behind one signature.

Data-free criteria (``magnitude``: L2, L1) read the weights; data-driven ones (``saliency``:
hessian, taylor) also read calibration statistics (``calibration``). ``registry.group_scores``
scores every group with any of them.
"""

from svtprune.importance.calibration import Calibration, calibrate
from svtprune.importance.magnitude import l1_scores, l2_scores
from svtprune.importance.registry import CRITERIA, DATA_DRIVEN, Criterion, group_scores
from svtprune.importance.saliency import DATA_CRITERIA, column_saliency, hessian_scores, taylor_scores

__all__ = [
    "CRITERIA", "DATA_CRITERIA", "DATA_DRIVEN", "Calibration", "Criterion", "calibrate", "column_saliency",
    "group_scores", "hessian_scores", "l1_scores", "l2_scores", "taylor_scores",
]  # fmt: skip
