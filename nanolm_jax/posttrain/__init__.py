"""Post-training data: conversation loading, synthetic SFT generators, and SFT batch packing."""
