"""The networks: reusable layers, variant configs, a registry and one checkpoint loader."""
