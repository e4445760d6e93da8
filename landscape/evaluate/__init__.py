"""The evaluation engine: loss and metrics at many points of weight space in one batched pass."""

from landscape._batch import describe_data
from landscape._options import parse_bytes
from landscape.evaluate.affine import AffinePoints
from landscape.evaluate.points import BatchMetric, Strategy, evaluate_points
from landscape.functional import BNMode

__all__ = ["AffinePoints", "BNMode", "BatchMetric", "Strategy", "describe_data", "evaluate_points", "parse_bytes"]
