"""Everything that talks to the Hugging Face Hub: auth, cards, push, pull, the vote mirror.

`python -m hub` is its command line (`hub.cli`); it imports `pipeline`, never `ui`.
"""
