"""CNN features (the paper's "deep" branch): Inception v3 warm-up trained on cohort 1.

- :mod:`.slices`: a case -> three 3-channel 299x299 images around the largest hematoma slice
- :mod:`.network`: torchvision's Inception v3, weights from ImageNet / a file / random
- :mod:`.training`: warm-up training on cohort 1 only (``train_cnn``, ``fit_cnn``)
- :mod:`.bundle`: the trained CNN folder (``save_cnn``, ``load_cnn``)
- :mod:`.embedding`: 6144 features per patient (``embed_patient``, ``embed_table``, ``embed_output``)

Importing this package loads torch; import it only where CNN work is done.
"""

from .bundle import CNNModel, load_cnn, save_cnn
from .embedding import FEATURE_NAMES, N_FEATURES, Embeddings, embed_output, embed_patient, embed_table, merge_features
from .network import WEIGHT_CHOICES, build_network
from .slices import SliceSettings, Stacks, make_stacks
from .training import PRESETS, TrainingResult, TrainingSettings, fit_cnn, preset, train_cnn

__all__ = [
    "CNNModel", "Embeddings", "FEATURE_NAMES", "N_FEATURES", "PRESETS", "SliceSettings", "Stacks", "TrainingResult",
    "TrainingSettings", "WEIGHT_CHOICES", "build_network", "embed_output", "embed_patient", "embed_table",
    "fit_cnn", "load_cnn", "make_stacks", "merge_features", "preset", "save_cnn", "train_cnn",
]
