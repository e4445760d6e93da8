"""Beyond the papers: connecting minima, sharpness against generalization, curvature over training."""
