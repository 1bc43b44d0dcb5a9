"""Render the placeholder project for a name and build its sdist.

The placeholder is an sdist-only project whose in-tree build backend refuses
every wheel hook with a message saying whose private package the name is and
whom to contact. Installers stop at "Getting requirements to build wheel",
nothing is installed, and no build dependency is ever fetched (``requires =
[]``). A wheel that installs and fails on import would install silently for
dotted names and break tools that import everything, hence no wheel.

Template contract
=================

A template is a directory (the bundled one is the package
``namekeeper.placeholder_template``; a user's is ``[placeholder] template`` in
the config). It is copied into a fresh temporary directory, file by file:

* ``*.toml``, ``*.md`` and ``*.txt`` files are rendered with
  `string.Template`: ``$var`` / ``${var}`` is replaced, ``$$`` is a literal
  ``$``, an unknown variable is an error. Each value is escaped for the file
  type: TOML basic-string escaping for ``.toml`` (so put variables only inside
  ``"double-quoted"`` strings), Markdown backslash escaping for ``.md``, none
  for ``.txt``.
* Every other file (``.py`` above all) is copied byte for byte and never
  substituted: code gets its values from the data file below, so no configured
  text is ever pasted into Python.
* namekeeper writes ``placeholder.json`` at the top (replacing any file of that
  name) with the keys ``name``, ``display_name``, ``version``,
  ``sdist_basename``, ``organization``, ``contact``, ``message``, ``summary``,
  ``readme`` (the file that becomes the description) and ``metadata`` (the
  PKG-INFO header lines, as ``[key, value]`` pairs, single-line). The bundled
  backend (``build-backend/placeholder_backend.py``) reads only this file, plus
  the rendered ``README.md`` as the long description; a custom template can
  reuse it unchanged (keep a ``README.md`` then).
* Skipped: hidden files and folders (``.*``), ``__pycache__``, ``*.pyc``,
  and the top-level ``__init__.py`` (it only makes the bundled template an
  importable resource). Symbolic links are refused.
* The rendered ``pyproject.toml`` must declare ``requires = []`` and an
  in-tree backend (``backend-path``); anything else is refused, because an
  installer would otherwise fetch and run build code from the public index.
* The backend's ``build_sdist`` must produce ``{sdist_basename}.tar.gz``
  (PEP 625) holding one top-level folder with ``PKG-INFO``.

Variables: ``name`` (canonical, ``acme-utils``), ``display_name``
(``Acme_Utils``), ``dist_name`` (``acme_utils``), ``version`` (normalised),
``organization``, ``contact`` (may be empty), ``contact_or_org`` (the contact,
or the organisation when none is configured), ``message`` (what installers
print), ``summary``. Names and versions are validated before use; the
organisation and contact are folded to one line and stripped of control
characters, since they also go into PKG-INFO headers.

Version: ``[placeholder] version``, default ``0.0.0``. A final ``0.0.0``
outranks private packages that have only pre-releases (pip skips pre-releases
once a final exists); such organisations should set ``0.0.0.dev0``.

Speed: building runs the backend's ``build_sdist`` through
``build.ProjectBuilder`` without isolation. For the bundled template the hook
runs in-process (our own backend, a few milliseconds); a user's template runs
in a subprocess, as any PEP 517 frontend would, with namekeeper's secret
environment variables removed.

The package: `interface` holds the contract (`PlaceholderBuilder`), `render`
turns the name and the config into a rendered project (values, escaping, the
build-system check), `build` turns that project into its sdist, and `builder`
is the built-in plugin that joins the two.
"""
