"""Mutual-information estimators and checkpoint selection (Checkpoint KD, Algorithm 1)."""
