"""Every public name of the package has a docstring (the API reference is read from them)."""

from __future__ import annotations

import inspect

import boxyard


def test_every_public_name_is_documented() -> None:
    missing = []
    for name in boxyard.__all__:
        obj = getattr(boxyard, name)
        if name.startswith("__") or isinstance(obj, str):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            members = {}
            for klass in reversed(obj.__mro__):
                if klass.__module__.startswith("boxyard"):
                    members.update(vars(klass))
            for attr, member in members.items():
                if attr.startswith("_"):
                    continue
                if inspect.isfunction(member) or isinstance(member, (property, classmethod, staticmethod)):
                    target = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                    if not inspect.getdoc(target):
                        missing.append(f"{name}.{attr}")
    assert not missing, f"public names without a docstring: {missing}"
