"""Lipton, "Stuck in What? Adventures in Weight Space": its figures."""
