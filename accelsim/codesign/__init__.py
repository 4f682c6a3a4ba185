"""Co-design search: per-group precision and 2:4 sparsity chosen together with the hardware.

* ``spec``: the search space (hardware grid as sweeps have it, per-group formats), validated.
* ``groups``: formats, layer groups, and the graph an assignment makes.
* ``cost``: exact per-layer cost cache (sums equal ``simulate``) and the ILP's additive deltas.
* ``accuracy``: per-group sensitivities by the integer reference, summed into a predicted loss.
* ``search``: one ILP (``scipy.optimize.milp``) per hardware point.
* ``verify``: QAT fine-tuning of a chosen assignment, measured by the integer reference.
* ``run``: the whole pipeline into a resumable results store.

docs/codesign.md explains the choices.
"""
