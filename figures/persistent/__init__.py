"""Persistent Neurons (extended version and preprint): its figures, one module each."""
