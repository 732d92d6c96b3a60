"""Inspection of any classifier's checkpoint (docs/design.md §8.1, docs/inspect.md): a user's
own network (a state dict with an architecture name, an ONNX graph) or its head and features,
with the user's data, analysed as the head of a real network is: collapse per feature layer on
train and test data, accuracy, and the head's layer spectra, alignment, gradients and weight
spectra against the UFM.

* :mod:`.architectures` — the architectures a state dict can be loaded into;
* :mod:`.loading` — reading state dicts, features files and data files without running code;
* :mod:`.onnx_graph` — a small interpreter of an ONNX graph's classifier operators;
* :mod:`.report` — the report;
* :mod:`.command` — ``python -m dufm_core inspect``.
"""
