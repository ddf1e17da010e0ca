"""The one HTTP app (layer 6): `create_app(platform)` assembles every stage's routes."""

from tidegate.api.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
