"""Generated data the project ships instead of downloading: the fact world (known, unknown and one-off people),
worked arithmetic, the assistant's identity, system-prompt following, and search conversations.

A neutral layer: pretraining sources (nanolm_jax.data.sources) and the post-training stages both import it; it
imports neither.
"""
