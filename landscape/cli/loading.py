"""What the commands load: points (trajectory snapshots or weights files), the data, and the model.

Loading never executes code: weights are ``.safetensors`` or ``torch.load(weights_only=True)``, and a factory
recorded in a trajectory is held to :func:`landscape.factory.resolve`'s rules for untrusted references.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape.cli.output import rank
from landscape.cli.parsing import DATA_NAMES, CLIError, parse_model_kw, parse_point, plural

__all__ = ["open_trajectory", "load_point", "load_data", "build_template", "default_point"]


def open_trajectory(path: Path) -> Any:
    """The trajectory at ``path``, opened read-only.

    Raises:
        CLIError: If it is missing, unreadable or empty.
    """
    from landscape.trajectory.fileformat import TrajectoryError
    from landscape.trajectory.store import Trajectory

    try:
        traj = Trajectory.open(path, "r")
    except FileNotFoundError:
        raise CLIError(f"trajectory {str(path)!r} not found") from None
    except TrajectoryError as e:
        raise CLIError(f"cannot read trajectory {str(path)!r}: {e}") from None
    if len(traj) == 0:
        raise CLIError(f"trajectory {str(path)!r} holds no snapshot")
    return traj


def load_point(spec: str, template: nn.Module) -> nn.Module:
    """A new model at point ``spec`` (trajectory snapshot or weights file), built from ``template``.

    Raises:
        CLIError: On a missing file, a bad index, an unsafe or unreadable file, or an architecture mismatch.
    """
    from landscape.factory import FactoryError, load_state_dict, load_weights

    path, index = parse_point(spec)
    if path.is_dir():
        traj = open_trajectory(path)
        i = -1 if index is None else index
        if not -len(traj) <= i < len(traj):
            raise CLIError(
                f"{spec}: snapshot index {i} out of range; {str(path)!r} has {plural(len(traj), 'snapshot')} "
                f"(0..{len(traj) - 1}, or negative from the end)"
            )
        from landscape.trajectory.fileformat import CorruptTrajectoryError

        try:
            return traj.model_at(template, i)
        except CorruptTrajectoryError as e:  # a damaged file is not an architecture mismatch
            raise CLIError(f"{spec}: the trajectory is damaged: {e}; see landscape check {str(path)!r}") from None
        except ValueError as e:
            raise CLIError(f"architecture mismatch for {spec}: {e}; check --model and --model-kw") from None
    if index is not None:
        raise CLIError(f"{spec}: an index only applies to a trajectory directory")
    try:
        tensors = load_state_dict(path)
    except FactoryError as e:
        raise CLIError(str(e)) from None
    if "vector" in tensors:  # a trajectory snapshot file
        from landscape.params import ParamLayout

        model = copy.deepcopy(template)
        layout = ParamLayout.from_model(model)
        vec = tensors["vector"]
        if vec.shape != (layout.numel,):
            raise CLIError(
                f"architecture mismatch for {spec}: the snapshot holds {vec.numel()} parameters, the model "
                f"has {layout.numel}; check --model and --model-kw"
            )
        state = {**layout.unflatten(vec), **{k[8:]: v for k, v in tensors.items() if k.startswith("buffers/")}}
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise CLIError(f"architecture mismatch for {spec}: {e}; check --model and --model-kw") from None
        return model
    try:
        return load_weights(template, tensors, what=f"for {spec}")
    except FactoryError as e:
        raise CLIError(f"architecture mismatch: {e}") from None


def load_data(args: argparse.Namespace, dtype: torch.dtype) -> tuple[tuple[Tensor, Tensor], tuple[int, ...], int, str]:
    """``((X, y), input_shape, num_classes, description)`` for ``--data``, ``--split`` and ``--limit``.

    Raises:
        CLIError: On an unknown name, a missing directory or a missing split.
    """
    from landscape import data as D

    spec = args.data
    kind, _, where = spec.partition(":")
    try:
        if spec == "digits":
            splits = D.load_digits_split(dtype=dtype)
        elif spec == "mnist-subset":
            splits = D.load_mnist_subset(dtype=dtype)
        elif kind == "cifar10" and where:
            splits = D.load_cifar10(where, dtype=dtype)
        elif kind == "mnist" and where:
            splits = D.load_mnist_idx(where, dtype=dtype)
        elif Path(spec).is_dir():
            try:
                splits = D.load_cifar10(spec, dtype=dtype)
            except FileNotFoundError as cifar:
                try:
                    splits = D.load_mnist_idx(spec, dtype=dtype)
                except FileNotFoundError as mnist:
                    raise CLIError(f"--data {spec!r} holds neither data set. {cifar} {mnist}") from None
        else:
            raise CLIError(
                f"--data {spec!r}: use {', '.join(DATA_NAMES)}, cifar10:DIR, mnist:DIR or a directory holding "
                "CIFAR-10 batches or MNIST IDX files"
            )
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    pair = getattr(splits, args.split)
    if pair is None:
        raise CLIError(f"--data {spec!r} has no {args.split!r} split; use --split train")
    X, y = pair
    if args.limit is not None:
        X, y = X[: args.limit], y[: args.limit]
    desc = f"{splits.description}; {args.split} split" + (f", first {len(y)}" if args.limit is not None else "")
    args.n_examples = len(y)  # for the advice on a one-sample batch under --bn-mode train (app.explain_batch_norm)
    return (X, y), tuple(splits.input_shape), int(splits.num_classes), desc


def _first_meta(specs: Sequence[str]) -> tuple[dict[str, Any], str] | None:
    """Run metadata of the first trajectory among ``specs``, and its path."""
    for s in specs:
        path, _ = parse_point(s)
        if path.is_dir():
            return open_trajectory(path).meta, str(path)
    return None


def build_template(args: argparse.Namespace, points: Sequence[str], shape: tuple[int, ...], classes: int) -> nn.Module:
    """The architecture: ``--model``/``--model-kw``, or the first trajectory's recorded factory or model.

    ``--model`` is a zoo name (:data:`landscape.models.zoo.MODELS`) or ``package.module:factory``; a factory
    recorded in a trajectory is held to :func:`landscape.factory.resolve`'s rules for untrusted references.

    Raises:
        CLIError: If no model is named anywhere, or the factory or builder rejects the options.
    """
    from landscape.factory import FactoryError, FactoryRef, factory_from_meta
    from landscape.models.zoo import build_model

    name, kw = args.model, parse_model_kw(args.model_kw)
    ref, trusted = None, True
    if name is not None and ":" in name:
        try:
            ref = FactoryRef(name, kw)
        except FactoryError as e:
            raise CLIError(str(e)) from None
    elif name is None:
        found = _first_meta(points)
        meta, where = found if found else ({}, "")
        try:
            ref = factory_from_meta(meta)
        except FactoryError as e:
            raise CLIError(f"{where}: {e}") from None
        if ref is not None:
            ref, trusted = FactoryRef(ref.target, {**ref.kwargs, **kw}), False
            if not args.quiet and rank() == 0:
                print(f"model: {ref} (recorded in {where})", file=sys.stderr)
        else:
            name, kw = meta.get("model"), {**dict(meta.get("model_kw", {})), **kw}
    if ref is not None:
        try:
            return ref.build(trusted=trusted, dtype=args.dtype)
        except FactoryError as e:
            raise CLIError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - the user's factory failed: say which, without a traceback
            raise CLIError(f"building the model {ref} failed: {type(e).__name__}: {e}") from None
    if name is None:
        raise CLIError(
            "--model is required (the trajectory's metadata names no model): a zoo name such as mlp, or "
            "package.module:factory"
        )
    try:
        return build_model(name, shape, classes, seed=0, dtype=args.dtype, **kw)
    except KeyError as e:
        raise CLIError(f"{e.args[0]}; or give package.module:factory for a model of your own") from None
    except (TypeError, ValueError) as e:
        import inspect

        from landscape.models.zoo import MODELS

        options = list(inspect.signature(MODELS[name]).parameters)[2:]  # after input_shape and num_classes
        known = f"; its --model-kw options: {', '.join(options)}" if options else "; it takes no --model-kw"
        raise CLIError(f"cannot build model {name!r} with {kw}: {e}{known}") from None


def default_point(args: argparse.Namespace, given: str | None, what: str) -> str:
    """``given``, else ``--weights``, else the last snapshot of the first ``--trajectory`` (commands that have it)."""
    if given:
        return given
    if getattr(args, "weights", None):
        return str(args.weights)
    trajs = getattr(args, "trajectory", None) or []
    if trajs:
        return str(trajs[0])
    if not hasattr(args, "trajectory"):  # line and distance have no --trajectory
        raise CLIError(f"give {what} or --weights FILE")
    raise CLIError(f"give {what}, --weights FILE or --trajectory TRAJ (its last snapshot)")
