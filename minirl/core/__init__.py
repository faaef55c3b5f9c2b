"""The mathematics of minirl: pure functions on arrays, no training loops.

Every function here takes unbatched arrays (callers add ``jax.vmap``) unless its
docstring says which leading axes it expects.
"""
