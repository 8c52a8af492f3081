"""Advantage estimators (pure tensor math) and their registry."""
