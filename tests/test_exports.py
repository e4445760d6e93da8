"""The front door and the subpackages re-export their modules' public names: whole, once, the same objects."""

import importlib
import inspect
import pkgutil

import pytest
import torch

import landscape
from landscape import analyze, curvature


@pytest.mark.parametrize("package", [landscape, analyze, curvature], ids=lambda p: p.__name__)
def test_every_exported_name_is_listed_once_and_resolves(package):
    assert len(package.__all__) == len(set(package.__all__))
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing


@pytest.mark.parametrize("package", [analyze, curvature], ids=lambda p: p.__name__)
def test_a_subpackage_exports_the_union_of_its_modules_all(package):
    """Each public module re-exported by the package gives all its names, as the same objects."""
    union: dict[str, object] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if set(module.__all__) & set(package.__all__):
            assert set(module.__all__) <= set(package.__all__), info.name
            union.update({n: getattr(module, n) for n in module.__all__})
    assert sorted(union) == package.__all__
    assert all(getattr(package, n) is obj for n, obj in union.items())


def test_the_front_door_names_are_the_subpackages_objects():
    shared = set(landscape.__all__) & (set(analyze.__all__) | set(curvature.__all__))
    assert len(shared) > 60  # slices, distance, PCA, curvature, alignment, barriers, curves
    for name in shared:
        home = analyze if name in analyze.__all__ else curvature
        assert getattr(landscape, name) is getattr(home, name), name


# Public callables whose **kwargs are not options: functional_forward passes them to the model's forward.
MODEL_INPUTS = {"functional_forward"}


def _public_callables():
    import persistence
    import tunnels

    for package in (landscape, tunnels, persistence):
        for name in package.__all__:
            obj = getattr(package, name)
            if inspect.isclass(obj):
                yield f"{package.__name__}.{name}", obj
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and inspect.isfunction(member):
                        yield f"{package.__name__}.{name}.{attr}", member
            elif callable(obj):
                yield f"{package.__name__}.{name}", obj


def test_no_public_callable_hides_its_options_behind_kwargs():
    """Issue 19: a notebook's signature help shows every option (typed dictionaries and forwards are expanded)."""
    hidden = []
    for qual, fn in _public_callables():
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # builtins without a signature
            continue
        if (
            any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
            and qual.rsplit(".", 1)[-1] not in MODEL_INPUTS
        ):
            hidden.append(qual)
    assert not hidden, f"public callables with a **kwargs pass-through in their shown signature: {hidden}"


def test_forwarded_keywords_are_the_targets_own():
    """fit and PersistentTrainer show the Trainer's keywords as the Trainer declares them (and nothing it lacks)."""
    from persistence import PersistentTrainer
    from persistence.batched import BATCHED_OPTIONS

    trainer = {n: p for n, p in inspect.signature(landscape.Trainer).parameters.items() if p.kind is p.KEYWORD_ONLY}
    fit = inspect.signature(landscape.fit).parameters
    assert {n: p for n, p in fit.items() if p.kind is p.KEYWORD_ONLY} == trainer
    shown = inspect.signature(PersistentTrainer).parameters
    code = PersistentTrainer.__init__.__code__
    own = set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    forwarded = [n for n in shown if n not in own]
    assert set(forwarded) <= set(trainer) | set(BATCHED_OPTIONS)
    assert not {"seed", "eval_data", "regularizer", "trajectory", "tags"} & set(forwarded)  # set per iteration
    assert all(shown[n].default == trainer[n].default for n in forwarded if n in trainer)
    # every shown keyword is accepted: a tiny loop-engine run with the Trainer's keywords given explicitly
    x = torch.linspace(-1, 1, 16)[:, None]
    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    kw = {n: shown[n].default for n in forwarded if n in trainer}
    kw.update(steps=3, batch_size=8)
    pt = PersistentTrainer(
        net, (x, x.abs()), torch.nn.functional.mse_loss, "sgd", iterations=2, lam=0.01, eval_data={"val": (x, x)}, **kw
    ).fit()
    assert len(pt.results_) == 2
