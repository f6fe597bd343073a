"""Evaluation: top-k error, the ILSVRC devkit localisation error and submission files, COCO
results and COCOeval, and the `vgglocal eval` runner."""
