"""LightningDataModules for each family (import from their modules, or from ``lit_models``)."""
