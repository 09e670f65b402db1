"""The ``train`` stage: decoupled subtask classifiers on partially frozen backbones.

One process trains every subtask of one domain (pedestrian, vehicle or the router) for one
backbone. The frozen prefix of the backbone runs once per image, crop and flip
(:mod:`pipeline.train.cache`); each subtask then trains only its own copy of the unfrozen tail
and a linear head (:mod:`pipeline.train.loop`). :mod:`pipeline.train.stage` is the entry point.

Modules: ``data`` (tables -> label matrices, crops, class weights), ``cache`` (shared prefix
features), ``model`` (tail + head, masked loss), ``loop`` (AdamW, cosine schedule, checkpoints),
``pseudo`` (pseudo-labels for the partial vehicle labels), ``stage`` (MLflow runs and outputs).
"""
