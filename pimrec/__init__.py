"""pimrec: co-design of recommender models and Processing-In-Memory hardware.

This package holds only what every other package shares: the project error class, the report
writer and the `pimrec` command line. The work itself lives in `models`, `traces`, `pimsim` and
`codesign` (data flows one way: model -> trace -> mapping -> simulation -> report).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pimrec")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
