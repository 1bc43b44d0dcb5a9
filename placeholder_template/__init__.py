"""The bundled placeholder template (data, not code namekeeper imports).

This file only makes the folder an importable resource package, so that
``importlib.resources.files("namekeeper.placeholder_template")`` finds it in
editable and wheel installs alike. It is never copied into a placeholder.
See ``namekeeper.placeholder`` for the template contract.
"""
