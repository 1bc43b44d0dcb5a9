"""Build a rendered placeholder project into its sdist, the way a PEP 517 frontend would.

The second half of building a placeholder (`namekeeper.placeholder.render`
is the first).  The backend's ``build_sdist`` runs through
``build.ProjectBuilder`` without isolation, with one of two runners:

- the bundled template's backend is our own code, copied verbatim, so it runs
  in-process (a few milliseconds instead of a Python start-up);
- a user's template runs in a subprocess, as any frontend would run it, with
  namekeeper's secret environment variables removed: a user's backend gets
  no tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

SUBPROCESS_TIMEOUT = 120.0

Runner = Callable[..., None]  # pyproject_hooks: runner(cmd, cwd, extra_environ)


class SdistBuildError(Exception):
    """The backend failed to build the sdist; the message says why, with its output's tail."""


_compiled: dict[bytes, types.CodeType] = {}


def in_process_runner(backend_file: Path) -> Runner:
    """A pyproject_hooks runner that runs our own bundled backend without a subprocess.

    It speaks the same protocol as pyproject_hooks' helper script (hook name and
    control directory as the last two arguments, ``input.json`` in,
    ``output.json`` out). The backend finds its project from its own file, so
    no ``chdir`` (process-wide, unsafe under threads) is needed.
    """

    def run(cmd: Sequence[str], cwd: str | None = None,
            extra_environ: Mapping[str, str] | None = None) -> None:
        hook_name, control_dir = cmd[-2], Path(cmd[-1])
        kwargs = json.loads((control_dir / "input.json").read_text(encoding="utf-8"))["kwargs"]
        source = backend_file.read_bytes()
        code = _compiled.get(source)
        if code is None:
            code = _compiled[source] = compile(source, str(backend_file), "exec")
        module = types.ModuleType("namekeeper_placeholder_backend")
        module.__file__ = str(backend_file)
        result: dict[str, Any] = {"unsupported": False, "return_val": None}
        try:
            exec(code, module.__dict__)  # noqa: S102 - our own bundled backend, copied verbatim
            if hook_name == "_supported_features":
                result["return_val"] = []
            elif not hasattr(module, hook_name):
                result = {"hook_missing": True, "missing_hook_name": hook_name}
            else:
                result["return_val"] = getattr(module, hook_name)(**kwargs)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            raise subprocess.CalledProcessError(1, list(cmd), output=str(exc).encode()) from exc
        (control_dir / "output.json").write_text(json.dumps(result), encoding="utf-8")

    return run


def subprocess_runner(secret_values: frozenset[str]) -> Runner:
    """pyproject_hooks' quiet runner, minus our secrets: a user's backend gets no tokens."""

    def run(cmd: Sequence[str], cwd: str | None = None,
            extra_environ: Mapping[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("NAMEKEEPER_") and v not in secret_values}
        env.update(extra_environ or {})
        subprocess.run(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, check=True, timeout=SUBPROCESS_TIMEOUT)

    return run


def _failure_text(exc: BaseException) -> str:
    inner = getattr(exc, "exception", None)
    output = getattr(inner, "output", None)
    if isinstance(output, bytes):
        tail = output.decode("utf-8", "replace").strip().splitlines()[-15:]
        if tail:
            return f"{exc}: " + "\n".join(tail)
    return str(exc)


def build_sdist(project: Path, outdir: Path, runner: Runner) -> Path:
    """Run ``project``'s backend with ``runner`` to build its sdist into ``outdir``.

    Raises `SdistBuildError` when the backend fails or the project cannot be
    built; the backend's output (its last lines) is in the message.
    """
    import build  # here, not at the top: only a reservation needs it (audit and check do not)

    try:
        builder = build.ProjectBuilder(project, python_executable=sys.executable, runner=runner)
        return Path(builder.build("sdist", outdir))
    except (build.BuildException, build.BuildBackendException) as exc:
        raise SdistBuildError(_failure_text(exc)) from None
