"""Evaluation: the metrics as pure functions with their evaluators (``reset`` / ``process(records,
results)`` / ``summarize``): top-k error, the ILSVRC devkit localisation error, COCOeval and the
VOC detection AP; the submission writers; ``vgglocal eval`` (a loop over the split feeding
them), ``score``, ``compare`` (two evaluations image by image, with a paired test) and the
merge-threshold sweep."""
