"""The embedded synthetic Track-2 release (``python -m pipeline synth``).

`release` plans and writes the release (labels, captions, names, ground truth), `captions` speaks
the real caption language, `pedestrians` and `vehicles` render the images, `contact_sheet` draws
a sample grid. See docs/synthetic_data.md.
"""

from pipeline.synth.release import PROFILES, SynthError, synthesize

__all__ = ["PROFILES", "SynthError", "synthesize"]
