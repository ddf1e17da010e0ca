"""Products: building them in dependency order and publishing each version atomically."""

from tidegate.products.builder import BuildResult, build_products, load_sources

__all__ = ["BuildResult", "build_products", "load_sources"]
