"""maxitrack: the probability that an exposure suffers a tracking error.

An image-level classifier runs on a few tiles of each HDU chosen where the sources are
(:mod:`maxitrack.tiles`); the tile logits are combined into one score per field
(:mod:`maxitrack.scoring`). The command is :mod:`maxitrack.cli`; training is :mod:`maxitrack.train`.
"""
