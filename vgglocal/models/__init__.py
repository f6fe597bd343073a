"""Models: the VGG family (Table 1), heads, init schemes, checkpoint I/O."""

from vgglocal.models.heads import FCHead, box_outputs, select_class_boxes
from vgglocal.models.vgg import VGG, VGG_SPECS, build_vgg, copy_from_net_a, init_weights

__all__ = ["VGG", "VGG_SPECS", "FCHead", "box_outputs", "select_class_boxes", "build_vgg", "copy_from_net_a", "init_weights"]
