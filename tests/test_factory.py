"""Model factory references read from a file (a trajectory's metadata) call only model code of one's own."""

import pytest
import torch
from tests_pkg import nets
from torch import nn

from landscape import factory as FA


def test_a_recorded_reference_cannot_reach_any_callable_through_the_package_s_own_builder(tmp_path):
    # landscape.factory:build_model is a plain function outside the standard library, so a recorded reference
    # could name it; it then resolved its own `factory` argument as a trusted reference: open, os:system, ...
    made = tmp_path / "written-by-the-metadata"
    meta = {
        FA.FACTORY_KEY: {
            "target": "landscape.factory:build_model",
            "kwargs": {"factory": "builtins:open", "kwargs": {"file": str(made), "mode": "w"}},
        }
    }
    ref = FA.factory_from_meta(meta)
    with pytest.raises(FA.FactoryError, match="neither an nn.Module class nor a Python function of your own"):
        ref.build(trusted=False)
    assert not made.exists()


@pytest.mark.parametrize("target", ["torch:load", "numpy:load", "torch.hub:load", "landscape.factory:load_weights"])
def test_functions_of_installed_packages_and_of_landscape_are_refused_from_a_file(target):
    # torch.load(f, weights_only=False) and numpy.load(f, allow_pickle=True) unpickle a file the kwargs name
    with pytest.raises(FA.FactoryError, match="pass --model"):
        FA.resolve(target, trusted=False)
    assert callable(FA.resolve(target))  # a reference typed by the user may name them


def test_model_code_of_one_s_own_and_the_zoo_are_still_built_from_a_file(tmp_path, monkeypatch):
    assert FA.resolve("tests_pkg.nets:make", trusted=False) is nets.make
    assert FA.resolve("tests_pkg.nets:Net", trusted=False) is nets.Net
    assert FA.resolve("torch.nn:Linear", trusted=False) is nn.Linear  # a model class, wherever it lives
    built = FA.build_model(
        "landscape.models.zoo:build_model", {"name": "mlp", "input_shape": [4], "num_classes": 3}, trusted=False
    )
    assert isinstance(built, nn.Module) and built(torch.zeros(2, 4)).shape == (2, 3)
    # a module of one's own re-exporting an installed loader: the function's own module is what counts
    (tmp_path / "my_nets_hunt12.py").write_text("from torch import load\n\ndef make():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert FA.resolve("my_nets_hunt12:make", trusted=False).__name__ == "make"
    with pytest.raises(FA.FactoryError, match="of your own"):
        FA.resolve("my_nets_hunt12:load", trusted=False)
