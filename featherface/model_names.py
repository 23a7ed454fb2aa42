"""Names of the registered network variants, importable without torch (for CLI help)."""

ARCH_NAMES: tuple[str, ...] = ("v1", "v1-489k", "retinaface-mnet025", "v2-ultra")

# V2 Ultra's five "zero-parameter innovations", each a switch of FeatherFaceV2UltraConfig.
INNOVATIONS: tuple[str, ...] = (
    "feature_reuse",
    "attention_multiplication",
    "progressive_enhancement",
    "multiscale_context",
    "dynamic_weight_sharing",
)

# Every FeatherFaceV2UltraConfig flag that `--switch` flips: the innovations, the
# backbone's activation (ReLU by default; off: the teacher's LeakyReLU, which a frozen
# shared backbone needs), the second, dilated context block per level, and a head per level.
BACKBONE_ACTIVATION = "relu_backbone"
SWITCHES: tuple[str, ...] = INNOVATIONS + (BACKBONE_ACTIVATION, "deep_context", "level_heads")
