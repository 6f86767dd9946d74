"""Data layer: the Sample type, readers, rendering with loss masks, splitting, preparation."""
