"""The report card of a training chain: what was trained, how long it took, and how well each stage did."""
