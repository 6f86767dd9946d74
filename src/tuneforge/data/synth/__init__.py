"""Teacher-written training data: pairs from document chunks, paraphrases of prompts.

``tuneforge data synth CONFIG`` runs the config's ``synth.tasks``
(:func:`tuneforge.data.synth.synthesize.synthesize`).
"""
