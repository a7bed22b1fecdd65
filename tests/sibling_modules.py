"""Another test folder's helper module, for the tests of a folder that pytest does not put on
the import path: loaded by its path under a name of its own, once per session."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from emps.settings import PROJECT_ROOT


def load_module(name: str, relative: str) -> ModuleType:
    """The module at `relative` (to the project root) as `name`; the same one when loaded before."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
