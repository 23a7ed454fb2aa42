"""Names of the registered network variants, importable without torch (for CLI help)."""

ARCH_NAMES: tuple[str, ...] = ("v1", "v1-489k", "retinaface-mnet025", "v2-ultra")
