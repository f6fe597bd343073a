"""Appendix B: the very deep nets as fixed feature extractors for other data sets.

``features``: descriptors of a transfer split with one or more nets (the descriptor math on a
net is :mod:`vgglocal.inference.features`) and their cache; ``svm``: one-vs-rest linear SVMs,
the held-out choice of C, VOC classification AP and mean class recall; ``run``: the
``voc-cls``, ``caltech`` and ``voc-action`` protocols from data on disk to metrics files.

Layer: beside the engine, under the CLI; it uses evaluation (AP), inference, data and models,
and nothing below it imports it.
"""
