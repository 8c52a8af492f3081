"""Policies and training: tiny models and tokenizers, supervised warm start, the IG-Search trainer."""
