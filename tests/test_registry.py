import pytest

from harness.errors import HarnessError
from harness.registry import Registry


def test_did_you_mean_and_known_names():
    reg: Registry[int] = Registry("widget")
    reg.add("medqa", 1)
    reg.add("medmcqa", 2)
    with pytest.raises(HarnessError, match=r"unknown widget 'medqaa'; did you mean 'medqa'"):
        reg.get("medqaa")


def test_lazy_entry_imports_on_first_use():
    reg: Registry[object] = Registry("thing")
    reg.add_lazy("dumps", "json:dumps")
    import json

    assert "dumps" in reg
    assert reg.get("dumps") is json.dumps


def test_duplicate_registration_is_refused():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from harness.cli.app import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
