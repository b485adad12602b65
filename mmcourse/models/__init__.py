"""Course-sized models."""

from mmcourse.models.bow import bag_of_words
from mmcourse.models.cnn import ConvEncoder

__all__ = ["ConvEncoder", "bag_of_words"]
