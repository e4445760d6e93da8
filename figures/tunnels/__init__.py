"""Escaping Flat Areas via Function-Preserving Structural Network Modifications: its figures and tables."""
