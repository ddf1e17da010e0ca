"""tidegate: governed data products, kept fresh and served back within consent.

The public API is small on purpose; everything else is internal and may change.
"""

from tidegate.errors import ConfigError, Problem, TidegateError
from tidegate.platform import Platform
from tidegate.privacy.guard import AccessContext, AccessPlan, Guard
from tidegate.project import Project, load_project

__version__ = "0.1.0"

__all__ = [
    "AccessContext",
    "AccessPlan",
    "ConfigError",
    "Guard",
    "Platform",
    "Problem",
    "Project",
    "TidegateError",
    "__version__",
    "load_project",
]
