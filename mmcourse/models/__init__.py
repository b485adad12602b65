"""Every network a bundled checkpoint stores, one concept a file, each built from its config and
loading nothing (``mmcourse.pretrained.load`` finds a checkpoint's class here by the name on its card)."""

from mmcourse.models.attributes import AttributePredictor
from mmcourse.models.bow import bag_of_words
from mmcourse.models.clap import CLAP, SpectrogramClassifier
from mmcourse.models.clip import CLIP
from mmcourse.models.cnn import ConvEncoder
from mmcourse.models.dalle import DALLE
from mmcourse.models.dvae import DiscreteVAE
from mmcourse.models.photo_classifier import PhotoClassifier
from mmcourse.models.text import BagOfWordsEncoder, TextTransformer
from mmcourse.models.text_tower import TextTower
from mmcourse.models.text_to_image import DiffusionModel
from mmcourse.models.transformer import CausalLM
from mmcourse.models.vit import TinyViT
from mmcourse.models.vlm import VLM
from mmcourse.models.wavenet import WaveNet

__all__ = [
    "CLIP", "DALLE", "AttributePredictor", "BagOfWordsEncoder", "ConvEncoder", "DiffusionModel", "DiscreteVAE", "PhotoClassifier",
    "TextTransformer", "TinyViT", "bag_of_words", "CausalLM", "VLM",
    "CLAP", "SpectrogramClassifier", "WaveNet",
    "TextTower",
]
