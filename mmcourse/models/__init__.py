"""Course-sized models."""

from mmcourse.models.bow import bag_of_words
from mmcourse.models.clip import CLIP
from mmcourse.models.cnn import ConvEncoder
from mmcourse.models.text import BagOfWordsEncoder, TextTransformer
from mmcourse.models.vit import TinyViT

__all__ = ["CLIP", "BagOfWordsEncoder", "ConvEncoder", "TextTransformer", "TinyViT", "bag_of_words"]
