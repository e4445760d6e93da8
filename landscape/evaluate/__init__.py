"""The evaluation engine: loss and metrics at many points of weight space in one batched pass."""

from landscape.evaluate.points import (
    AffinePoints,
    BatchMetric,
    BNMode,
    Strategy,
    describe_data,
    evaluate_points,
    parse_bytes,
)

__all__ = ["AffinePoints", "BNMode", "BatchMetric", "Strategy", "describe_data", "evaluate_points", "parse_bytes"]
