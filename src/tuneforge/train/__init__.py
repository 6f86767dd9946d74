"""tuneforge.train."""
