"""tuneforge: from raw domain data to a served, monitored, fine-tuned LLM."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tuneforge")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
