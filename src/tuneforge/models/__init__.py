"""tuneforge.models."""
