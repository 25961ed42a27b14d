"""Real data that ships inside installed packages, exported to the on-disk layouts real datasets use."""
