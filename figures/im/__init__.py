"""Im, Tao & Branson, "An Empirical Analysis of Deep Network Loss Surfaces": its figures and tables, one module each."""
