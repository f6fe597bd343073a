"""Inference: dense multi-scale application, multi-crop, greedy merge, and the five test
protocols as functions of images returning one result per image."""
