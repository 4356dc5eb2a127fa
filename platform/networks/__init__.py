"""Semantic segmentation networks (one file each), shared layers, losses and the registry of
names (``--arch NAME``)."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.networks.enet import ENet, weight_grid
    from tomoloop.networks.layers import SIDE_MULTIPLE, check_sides, conv_block, decode, up_path
    from tomoloop.networks.losses import (
        LOSSES,
        TVERSKY_LOSSES,
        WEIGHTED_LOSSES,
        Loss,
        balanced_cross_entropy,
        cross_entropy,
        dice,
        focal_tversky,
        get_loss,
        tversky,
    )
    from tomoloop.networks.lrcsnet import LRCSNet, conv_stack
    from tomoloop.networks.matphase import (
        LCGAR,
        MatPhase,
        curriculum_mask,
        remove_rows_and_resize,
        sample_pixels,
        smooth_labels_knn,
    )
    from tomoloop.networks.registry import (
        MODELS,
        ModelSpec,
        build_model,
        freeze,
        load_model,
        save_model,
        transfer_weights,
    )
    from tomoloop.networks.transforcnn import (
        PATCH,
        REFERENCE_SIDE,
        EncoderBlock,
        FourierPositions,
        TransforCNN,
        lift,
        patchify,
        tokens_to_map,
    )
    from tomoloop.networks.unet import UNet
    from tomoloop.networks.ynet import (
        DilatedConvolutionModule,
        PyramidPoolingModule,
        RegularConvolutionModule,
        YNet,
        conv_bn_relu,
    )

__all__ = [
    "LCGAR",
    "LOSSES",
    "MODELS",
    "PATCH",
    "REFERENCE_SIDE",
    "SIDE_MULTIPLE",
    "TVERSKY_LOSSES",
    "WEIGHTED_LOSSES",
    "DilatedConvolutionModule",
    "ENet",
    "EncoderBlock",
    "FourierPositions",
    "LRCSNet",
    "Loss",
    "MatPhase",
    "ModelSpec",
    "PyramidPoolingModule",
    "RegularConvolutionModule",
    "TransforCNN",
    "UNet",
    "YNet",
    "balanced_cross_entropy",
    "build_model",
    "check_sides",
    "conv_block",
    "conv_bn_relu",
    "conv_stack",
    "cross_entropy",
    "curriculum_mask",
    "decode",
    "dice",
    "focal_tversky",
    "freeze",
    "get_loss",
    "lift",
    "load_model",
    "patchify",
    "remove_rows_and_resize",
    "sample_pixels",
    "save_model",
    "smooth_labels_knn",
    "tokens_to_map",
    "transfer_weights",
    "tversky",
    "up_path",
    "weight_grid",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
