"""Beyond the papers: connecting minima, sharpness against generalization, curvature over training."""

PACKAGE_ADDS = "Not in the papers the gallery reproduces: this is what the package adds."
"""The sentence every caption of this section carries (the gallery's other figures reproduce a paper's)."""
