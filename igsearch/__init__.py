"""igsearch: train search-augmented LLM agents with RL, crediting every search by its information gain."""

__version__ = "0.1.0"
