"""vgglocal: object localisation and detection with very deep VGG ConvNets.

Reproduces Appendix A of Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (ICLR 2015), with the paper's classification stack under it.
"""

from vgglocal.models.io import load_model

__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]
