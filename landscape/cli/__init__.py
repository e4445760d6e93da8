r"""Command line: ``landscape {line,plane,pca,hessian,distance,plot,check} ...`` (also ``python -m landscape``).

Compute a slice, a Hessian spectrum or a functional distance from saved trajectories or weights, and
write the result (``.npz``, loadable with :func:`landscape.results.load_result`), an HTML page and a PNG::

    landscape plane --model my_project.nets:make --model-kw '{"width": 8}' --weights w.safetensors \
        --data digits --out out/
    landscape plane --trajectory runs/a --data digits --out out/      # the model recorded in runs/a
    landscape line  --model mlp --model-kw hidden=[32] --data digits \
        --from runs/a:0 --to runs/a:-1 --alphas -0.5:1.5:41 --out out/
    landscape plane --model lenet5 --data mnist-subset --center runs/a:-1 \
        --directions filter --range -1:1 --resolution 41 --out out/
    landscape plane --data digits --directions pca --trajectory runs/a runs/b --out out/
    landscape hessian --trajectory runs/a --data digits --top-k 5 --out out/
    landscape distance --from runs/a:0 --to runs/b --data digits --out out/
    landscape pca runs/a runs/b --out out/ [--data digits --model mlp]
    landscape plot out/plane.npz --path out/plane_path.npz --out out/
    landscape check runs/a [--repair | --migrate]

A point is ``TRAJ[:INDEX]`` (a trajectory directory and a snapshot index, default the last; negative
counts from the end) or a weights file: ``.safetensors`` (a state dict or a snapshot: ``vector`` plus
``buffers/...``) or a torch state dict (``.pt``/``.pth``/``.bin``/``.ckpt``, read with
``torch.load(weights_only=True)``); nothing is unpickled. The model is ``--model``: a name in
:data:`landscape.models.zoo.MODELS` or ``package.module:factory`` (any importable function or class, called
with ``--model-kw``); without ``--model``, the factory recorded in the first trajectory's metadata
(``"model_factory"``, written by ``Trainer(..., factory=...)``; see :mod:`landscape.factory`), else its
``model``/``model_kw`` entries.

HTML pages share one ``plotly.min.js`` written beside them (offline, ~4.7 MB once per folder);
``--cdn`` loads plotly.js from its CDN instead (smaller pages, but viewing them needs a network).

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the command joins a gloo process group;
the evaluation engine then shards the points over the processes and gathers them on every rank, and
only rank 0 writes files.

The package: :mod:`~landscape.cli.app` (``main``), :mod:`~landscape.cli.parser` (the argument parser),
:mod:`~landscape.cli.parsing` (option values), :mod:`~landscape.cli.loading` (points, data, the model),
:mod:`~landscape.cli.output` (files and process group), and one module per group of commands:
:mod:`~landscape.cli.slices` (``line``, ``plane``, ``pca``), :mod:`~landscape.cli.measures` (``hessian``,
``distance``), :mod:`~landscape.cli.files` (``plot``, ``check``).
"""

from landscape.cli.app import main
from landscape.cli.loading import build_template as build_template
from landscape.cli.loading import load_data as load_data
from landscape.cli.loading import load_point as load_point
from landscape.cli.parser import build_parser
from landscape.cli.parsing import CLIError, parse_point, parse_values

__all__ = ["CLIError", "main", "build_parser", "parse_values", "parse_point"]  # as before the split; the loaders
# stay importable from here (load_point, load_data, build_template) but out of __all__, as before.
