"""splitsweep: how much of a budget to spend on shared pretraining, how much on per-domain experts."""
