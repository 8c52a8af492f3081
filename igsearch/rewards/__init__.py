"""Rewards: outcome metrics (EM/F1), information gain math and the answer-likelihood scorer."""
