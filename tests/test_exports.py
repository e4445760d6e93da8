"""The front door and the subpackages re-export their modules' public names: whole, once, the same objects."""

import importlib
import pkgutil

import pytest

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
