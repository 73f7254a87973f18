"""Applications of cross-attention: translation (more to come: captioning, QA, speech)."""
