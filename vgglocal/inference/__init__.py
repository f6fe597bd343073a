"""Inference: dense multi-scale application, multi-crop, greedy merge, the localisation protocols."""
