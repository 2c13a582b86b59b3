"""Reads the service catalog: the bundled YAML, extended by the operator's own file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from propready.core.catalog import Catalog, catalog_from_mapping


def load_catalog(path: Path | None = None) -> Catalog:
    """The bundled catalog, extended by the operator's file at `path` when given."""
    bundled_text = resources.files("propready.data").joinpath("catalog.yaml").read_text("utf-8")
    catalog = catalog_from_mapping(yaml.safe_load(bundled_text), "bundled catalog.yaml")
    if path is not None:
        extra = catalog_from_mapping(yaml.safe_load(path.read_text("utf-8")), str(path))
        catalog = catalog.merged_with(extra)
    return catalog
