"""Hyper-parameter search: ``tuneforge tune`` with Optuna (default) or Ray Tune."""

from tuneforge.tune.search import run_search

__all__ = ["run_search"]
