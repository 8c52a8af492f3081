"""Evaluation: greedy rollouts on QA sets, exact match per benchmark and question type, reports."""
