"""Labels: phase maps, tiers (who made a label), class/instance masks (RLE), train/val/test
splits, synthetic electrodes with exact labels; their Label Studio forms (``studio_json``)."""

from typing import TYPE_CHECKING

from tomoloop.lazy import lazy_exports

if TYPE_CHECKING:
    from tomoloop.labels.masks import (
        InstanceMasks,
        MaskFormatError,
        class_counts,
        decode_class_mask,
        decode_instances,
        encode_class_mask,
        encode_instances,
        encode_tiers,
        labelled_pixels,
        merge_by_tier,
        merge_with_tiers,
        pixel_tiers,
        stack_class_counts,
        stack_class_masks,
        unlabelled_mask,
    )
    from tomoloop.labels.phases import (
        IGNORE,
        MAX_LABEL_VALUE,
        PhaseMap,
        check_declared,
        class_index_lut,
        undeclared_values,
    )
    from tomoloop.labels.splits import (
        SPLIT_NAMES,
        balanced_seed,
        balanced_split,
        check_split_fills,
        class_share_ratio,
        parse_fractions,
        split_slices,
    )
    from tomoloop.labels.synthetic import (
        ELECTRODE_PHASES,
        Electrode,
        beam_hardening,
        carbon_binder,
        cracked_particles,
        forward_model,
        make_electrode,
        particle_packing,
    )
    from tomoloop.labels.tiers import Tier

__all__ = [
    "ELECTRODE_PHASES",
    "IGNORE",
    "MAX_LABEL_VALUE",
    "SPLIT_NAMES",
    "Electrode",
    "InstanceMasks",
    "MaskFormatError",
    "PhaseMap",
    "Tier",
    "balanced_seed",
    "balanced_split",
    "beam_hardening",
    "carbon_binder",
    "check_declared",
    "check_split_fills",
    "class_counts",
    "class_index_lut",
    "class_share_ratio",
    "cracked_particles",
    "decode_class_mask",
    "decode_instances",
    "encode_class_mask",
    "encode_instances",
    "encode_tiers",
    "forward_model",
    "labelled_pixels",
    "make_electrode",
    "merge_by_tier",
    "merge_with_tiers",
    "parse_fractions",
    "particle_packing",
    "pixel_tiers",
    "split_slices",
    "stack_class_counts",
    "stack_class_masks",
    "undeclared_values",
    "unlabelled_mask",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
