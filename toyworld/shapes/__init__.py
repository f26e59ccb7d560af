"""The shapes world (ToyWorld v3): one coloured shape on one background, rendered from a seed
(`world`), its text encoder (`text`), two readers (the `evaluator` CNN and the training-free
`colour_rule`) and its training command (`python -m toyworld.shapes.train`)."""
