"""The library: generation, votes, datasets, training methods, evaluation. No Gradio.

`python -m pipeline` is its command line (`pipeline.cli`); the app (`ui/`) calls the same functions.
"""
