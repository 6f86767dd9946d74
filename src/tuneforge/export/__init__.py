"""tuneforge.export."""
