"""Reads the service catalog: the bundled YAML, extended by the operator's own file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from propready.core.catalog import Catalog, catalog_from_mapping, merge_catalog_data


def load_catalog(path: Path | None = None) -> Catalog:
    """The bundled catalog, extended by the operator's file at `path` when given.

    The operator's entries override the bundled ones key by key (see merge_catalog_data).
    """
    bundled_text = resources.files("propready.data").joinpath("catalog.yaml").read_text("utf-8")
    bundled = yaml.safe_load(bundled_text)
    catalog = catalog_from_mapping(bundled, "bundled catalog.yaml")
    if path is not None:
        extra = yaml.safe_load(path.read_text("utf-8"))
        catalog_from_mapping(extra, str(path))  # the operator's file is valid on its own
        catalog = catalog_from_mapping(merge_catalog_data(bundled, extra), str(path))
    return catalog
