"""The demo shop: a deterministic data generator and the project that turns it into products.

`tidegate demo` copies `project_template()` into a folder, writes the generated Parquet
files into its `data/` subfolder, and runs the platform on it. The generator imports
numpy and pyarrow, so it is loaded only when first used: importing this package stays
cheap for every other CLI command.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidegate.demo.generator import SMALL, ShopSize, generate_shop

__all__ = ["SMALL", "ShopSize", "generate_shop", "project_template"]

#: Folder (relative to the project root) the project's sources read their Parquet files from.
DATA_FOLDER = "data"


def project_template() -> Traversable:
    """The demo project folder as packaged (YAML, SQL, README); copy it before use."""
    return resources.files("tidegate.demo").joinpath("project")


def __getattr__(name: str) -> Any:
    if name in {"SMALL", "ShopSize", "generate_shop"}:
        from tidegate.demo import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
