"""The public API is what `__all__` says, and everything in it exists."""

import tidegate


def test_all_names_are_exported() -> None:
    for name in tidegate.__all__:
        assert hasattr(tidegate, name), name


def test_public_surface_is_deliberate() -> None:
    public = {n for n in dir(tidegate) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(tidegate, n)).__name__ == "module"}
    assert public - modules == set(tidegate.__all__) - {"__version__"}
