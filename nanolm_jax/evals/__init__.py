"""Public-benchmark evaluation: bundled task data (BLiMP, the CORE ICL sets, GSM8K) and its loaders (`tasks`)."""
