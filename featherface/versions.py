"""Installed package versions, read from metadata (nothing is imported)."""
from __future__ import annotations

import importlib.metadata


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Versions of the installed packages among `names`; absent ones are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
