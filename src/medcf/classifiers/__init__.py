"""medcf.classifiers: the reference ResNet in five roles, wrapping of user models, TorchXRayVision.

Example:
    >>> from medcf.classifiers import load_classifier, Classifier
    >>> clf = load_classifier("runs/classifier", kind="classifier")          # doctest: +SKIP
    >>> mine = Classifier.wrap(my_net, class_names=("normal", "cardiomegaly"))  # doctest: +SKIP
"""

from medcf.classifiers.base import HEADS, Classifier, WrappedClassifier
from medcf.classifiers.resnet import (
    CLASSIFIERS,
    CPRScorer,
    CTRRegressor,
    ForeignObjectDetector,
    OracleClassifier,
    ResNetClassifier,
    ResNetConfig,
    load_classifier,
)
from medcf.classifiers.xrv import XRVClassifier, xrv_densenet

__all__ = [
    "CLASSIFIERS",
    "CPRScorer",
    "HEADS",
    "CTRRegressor",
    "Classifier",
    "ForeignObjectDetector",
    "OracleClassifier",
    "ResNetClassifier",
    "ResNetConfig",
    "WrappedClassifier",
    "XRVClassifier",
    "load_classifier",
    "xrv_densenet",
]
