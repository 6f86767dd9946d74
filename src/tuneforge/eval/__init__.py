"""tuneforge.eval."""
