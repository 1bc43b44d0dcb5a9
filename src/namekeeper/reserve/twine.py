"""Reserve a name by uploading its placeholder with twine's Python API.

The public index's answer to an upload is the final word on a name, so this
module's job is to translate that answer faithfully into an `Action`
(FIELD-NOTES, "The public index", has the table of statuses and texts; the
text is in the HTTP reason phrase, with the body as fallback).

Three things twine does by itself that a service must not let happen:

- **Credentials from nowhere.**  With no password twine looks in the keyring,
  then, for the public index, tries *trusted publishing over the network*,
  then prompts.  We resolve the credentials ourselves first (the
  ``NAMEKEEPER_PUBLIC_TOKEN`` token, then a credential in the upload URL, then
  the ``.pypirc`` section whose ``repository`` is our upload URL, then the
  keyring) and always hand twine an explicit password; with none, `upload`
  fails before any request leaves the process.  `unready_reason` lets the
  keeper and the CLI check that up front.  (`._twine_credentials`)
- **Output on stdout.**  twine prints through ``rich`` and logs under the
  ``twine`` logger.  Both are routed, per thread, into the
  ``namekeeper.reserve.twine`` logger at DEBUG/INFO, with the token scrubbed.
  (`._twine_output`)
- **No timeout, and five immediate retries on a 5xx.**  Our settings give
  twine's session a timeout (``[public] timeout``) and make one attempt per
  file: retrying, with backoff and within the hourly budget, is the queue's
  job.  (`._twine_session`)

Transient or final?  A failure worth retrying later (5xx, 408, network error,
timeout) and every rate-limit come back with ``UploadResult.transient`` set;
`is_transient` says the same for any backend's result.  Any other failure is
final: retrying cannot help until a human changes something (a token, a
config, a name).  A failure on our credentials (none found, or a 401/403 that is
not "isn't allowed to upload to project") also sets
``UploadResult.credentials_problem``: it is no fault of the name, and every
upload fails so until the credentials are fixed.  The refused credentials are
then forgotten, so the next upload looks for them again (a new token in the
keyring or ``.pypirc`` is used without a restart).
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from twine import exceptions as twine_exceptions
from twine import utils as twine_utils

from ..config import ENV_PUBLIC_TOKEN, PublicConfig, redact
from ..hookspecs import hookimpl
from ..model import Action, UploadResult
from ..names import InvalidName, canonical, name_from_filename, one_line, parsed_version
from ._twine_credentials import Credentials, find_credentials, split_userinfo
from ._twine_output import capturing
from .interface import ReservationBackend

if TYPE_CHECKING:
    from ..config import Config
    from ._twine_session import UploadSettings

log = logging.getLogger(__name__)

_MAX_DETAIL = 240  # characters of the index's answer quoted in a message
_MAX_BODY = 4000  # characters of a response body searched for the answer's text
_TRANSIENT_STATUSES = frozenset({408, 425, 500, 502, 503, 504})
_NO_TOKEN = (f"no upload token for the public index: set {ENV_PUBLIC_TOKEN}, or give twine one "
             "through .pypirc or keyring")


def is_transient(result: UploadResult) -> bool:
    """True when retrying the same upload later may succeed (rate limit, 5xx, network)."""
    return result.action is Action.RATE_LIMITED or result.transient


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


# --------------------------------------------------------------------------- the answer

_TAGS = re.compile(r"<[^>]{0,200}>")


def _one_line(text: str, limit: int = _MAX_DETAIL) -> str:
    """An untrusted server text (HTML tags too), safe for one line of a message."""
    return one_line(_TAGS.sub(" ", text), limit)


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    body: str
    retry_after: float | None

    @classmethod
    def from_response(cls, response: requests.Response, secrets: tuple[str, ...]) -> _Answer:
        """The answer, with ``secrets`` redacted from the *whole* text before anything is cut."""
        try:
            body = redact(response.text, secrets)[:_MAX_BODY]
        except (LookupError, ValueError, requests.RequestException):  # undecodable: no answer
            body = ""
        reason = response.reason
        if isinstance(reason, bytes):
            reason = reason.decode("latin-1")
        return cls(
            status=response.status_code,
            reason=redact(reason or "", secrets),
            body=body,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def matches(self, *needles: str | re.Pattern[str]) -> bool:
        """Whether the reason phrase — or, failing that, the body — says one of ``needles``."""
        for text in (self.reason, self.body):
            lowered = text.lower().replace("\u2019", "'")
            for needle in needles:
                if isinstance(needle, str) and needle in lowered:
                    return True
                if isinstance(needle, re.Pattern) and needle.search(lowered):
                    return True
        return False

    def detail(self, secrets: tuple[str, ...]) -> str:
        """One line quoting the answer (already redacted in full by `from_response`)."""
        reason = self.reason.strip()
        if not reason or reason.lower() in _GENERIC_REASONS:
            snippet = _one_line(self.body)
            reason = f"{reason}: {snippet}" if reason and snippet else (reason or snippet)
        return f"{self.status} {_one_line(redact(reason, secrets))}".strip()


# "The name 'x' isn't allowed." — not any "isn't allowed", which metadata errors may say too:
# mistaking one of those for a protected name would leave the name unreserved, silently.
_PROHIBITED_NAME = re.compile(r"\bname\b.{0,300}\bis(?:n't| not) allowed")

_CREDENTIALS_ADVICE = ("check that the token is valid and account-wide (project-scoped tokens "
                       "cannot create projects) and that the account has 2FA and a verified "
                       "email")

_GENERIC_REASONS = frozenset({
    "bad request", "forbidden", "unauthorized", "not found", "conflict", "too many requests",
    "internal server error", "bad gateway", "service unavailable", "gateway timeout", "ok",
})


def _next_version(filename: str) -> str:
    """A version after the one in ``filename`` that no upload has used yet, as a suggestion."""
    try:
        version = parsed_version(name_from_filename(filename)[2])
    except InvalidName:
        version = None
    if version is None:
        return "0.0.0.post1"
    post = (version.post or 0) + 1
    return f"{version.base_version}.post{post}"


def _result_for_answer(name: str, filename: str, answer: _Answer,
                       secrets: tuple[str, ...]) -> UploadResult:
    """Translate the index's refusal of ``filename`` into an `UploadResult` (FIELD-NOTES' table)."""
    status, detail = answer.status, answer.detail(secrets)
    if status == 400 and answer.matches("has already been used"):
        # The file is not there: it was, under a release deleted since or a project the
        # administrators removed, and the index never takes a file name twice.  Nothing
        # is held (the project it was creating is undone) until a new version is uploaded.
        return UploadResult(Action.FAILED,
                            f"the public index refuses {filename}: that file name was used "
                            f"before (a release deleted since, or a removed project), so "
                            f"{name} is not held; set [placeholder] version to one never "
                            f"uploaded for it, e.g. {_next_version(filename)} ({detail})")
    if status in (400, 409) and answer.matches("already exist"):
        return UploadResult(Action.ALREADY_OURS,
                            f"{name} is already ours: the public index already has {filename} "
                            f"({detail})")
    if status == 403 and answer.matches("allowed to upload to project"):
        return UploadResult(Action.TAKEN,
                            f"{name} is held by another account on the public index ({detail})")
    if status == 429:
        wait = (f"; it asks to wait {answer.retry_after:.0f} s" if answer.retry_after is not None
                else "")
        return UploadResult(Action.RATE_LIMITED,
                            f"the public index rate-limited the upload of {name} ({detail}){wait}",
                            retry_after=answer.retry_after, transient=True)
    if status == 400 and answer.matches("invalid value for name"):
        return UploadResult(Action.FAILED,
                            f"the public index says {name!r} is not a valid project name "
                            f"({detail}); namekeeper validates names before uploading, so this "
                            "is a bug or a new rule of the index: please report it")
    if status == 400:
        if answer.matches("conflict with python standard library"):
            why = "it is the name of a Python standard-library module"
        elif answer.matches("too similar to an existing project"):
            why = "it is too similar to an existing project"
        elif answer.matches(_PROHIBITED_NAME):
            why = "the index's administrators prohibit it"
        else:
            why = None
        if why:
            return UploadResult(Action.PROTECTED,
                                f"{name} is protected on the public index: {why}; nobody can "
                                f"register it ({detail})")
    if status == 401 or status == 403:
        # Not about the name: every upload meets the same refusal until a person acts.
        return UploadResult(Action.FAILED,
                            f"the public index refused our credentials for {name} ({detail}): "
                            f"{_CREDENTIALS_ADVICE}",
                            credentials_problem=f"the public index refuses our upload "
                                                f"credentials ({detail}): {_CREDENTIALS_ADVICE}")
    if status in _TRANSIENT_STATUSES or status >= 500:
        # A 5xx says nothing about whether the project was created before the failure.
        return UploadResult(Action.FAILED,
                            f"the public index answered {detail} to the upload of {name}; "
                            "try again later", retry_after=answer.retry_after, transient=True,
                            outcome_unknown=True)
    return UploadResult(Action.FAILED,
                        f"the public index refused {filename} for {name} ({detail})")


# --------------------------------------------------------------------------- the backend


class TwineReservationBackend(ReservationBackend):
    """Uploads placeholders to ``[public] upload-url`` with twine; thread-safe.

    ``config_file`` and ``use_keyring`` say where to look for a password when
    ``NAMEKEEPER_PUBLIC_TOKEN`` is not set (twine's usual sources); tests turn
    them off to stay hermetic.
    """

    def __init__(self, public: PublicConfig, *,
                 config_file: str | None = twine_utils.DEFAULT_CONFIG_FILE,
                 use_keyring: bool = True) -> None:
        self._public = public
        self._url, url_user, url_password = split_userinfo(public.upload_url)
        self._url_credentials = (
            Credentials(url_user or public.username, url_password, "the upload URL")
            if url_password else None
        )
        self._config_file = config_file
        self._use_keyring = use_keyring
        self._credentials: Credentials | None = None
        self._lock = threading.Lock()

    @property
    def upload_url(self) -> str:
        """Where uploads go, without any credential that was written into the URL."""
        return self._url

    def has_credentials(self) -> bool:
        """True when an upload would carry a password; checks the sources, sends nothing."""
        return self._resolve_credentials() is not None

    def unready_reason(self) -> str | None:
        if self.has_credentials():
            return None
        return _NO_TOKEN

    def _resolve_credentials(self) -> Credentials | None:
        with self._lock:
            if self._credentials is None:
                self._credentials = find_credentials(
                    self._public, self._url, self._url_credentials,
                    config_file=self._config_file, use_keyring=self._use_keyring)
                if self._credentials is not None:
                    log.debug("upload credentials for %s come from %s", self._url,
                              self._credentials.source)
            return self._credentials

    def _missing_credentials(self) -> UploadResult:
        where = f" in {self._config_file}" if self._config_file else ""
        return UploadResult(
            Action.FAILED,
            f"no upload token: set {ENV_PUBLIC_TOKEN} (or give twine a password for "
            f"{self._url}{where} or in the system keyring); nothing was uploaded",
            credentials_problem=_NO_TOKEN,
        )

    def _forget_credentials(self) -> None:
        """Look for credentials again at the next upload: the refused ones may be replaced
        meanwhile (a new token in the keyring or .pypirc) without a restart."""
        with self._lock:
            self._credentials = None

    def _check_files(self, name: str, files: list[Path]) -> UploadResult | None:
        """A reason not to upload at all: a non-canonical name, or files that are not its own."""
        try:
            if canonical(name) != name:
                return UploadResult(Action.FAILED, f"{name!r} is not a canonical project name")
        except InvalidName as exc:
            return UploadResult(Action.FAILED, str(exc))
        if not files:
            return UploadResult(Action.FAILED, f"nothing to upload for {name}")
        for file in files:
            try:
                _display, file_name, _version = name_from_filename(file.name)
            except InvalidName as exc:
                return UploadResult(Action.FAILED, f"refusing to upload for {name}: {exc}")
            if file_name != name:
                return UploadResult(Action.FAILED,
                                    f"refusing to upload {file.name!r}: it belongs to "
                                    f"{file_name!r}, not {name!r}")
            if not file.is_file():
                return UploadResult(Action.FAILED, f"placeholder file {str(file)!r} does not exist")
        return None

    def upload(self, name: str, files: list[Path]) -> UploadResult:
        """Upload ``files`` one by one; the index's answer decides the `Action`."""
        refusal = self._check_files(name, [Path(f) for f in files])
        # The result at INFO, whatever it is: its caller says it once, with what happens next
        # (a command's row; serve's worker, retrying or giving up, or its condition).
        if refusal is not None:
            log.info("%s", refusal.message)
            return refusal
        credentials = self._resolve_credentials()
        if credentials is None:
            result = self._missing_credentials()
            log.info("%s", result.message)
            return result
        secrets = credentials.secrets()
        started = time.perf_counter()
        with capturing(secrets):
            result = self._upload_all(name, [Path(f) for f in files], credentials, secrets)
        if result.credentials_problem is not None:
            self._forget_credentials()
            result = dataclasses.replace(
                result, credentials_problem=redact(result.credentials_problem, secrets))
        result = dataclasses.replace(result, message=redact(result.message, secrets))
        log.info("%s (%.0f ms)", result.message, (time.perf_counter() - started) * 1000)
        return result

    def _upload_all(self, name: str, files: list[Path], credentials: Credentials,
                    secrets: tuple[str, ...]) -> UploadResult:
        from ._twine_session import UploadSettings  # twine's upload modules: see _twine_output

        try:
            settings = UploadSettings(
                timeout=self._public.timeout,
                username=credentials.username,
                password=credentials.password,
                repository_url=self._url,
                non_interactive=True,
                disable_progress_bar=True,
                verbose=log.isEnabledFor(logging.DEBUG),
                config_file=self._config_file or twine_utils.DEFAULT_CONFIG_FILE,
            )
        except twine_exceptions.TwineException as exc:
            return UploadResult(Action.FAILED, f"twine cannot upload to {self._url}: "
                                               f"{_describe(exc, secrets)}")
        uploaded: list[str] = []
        existing: UploadResult | None = None
        for file in files:
            result = self._upload_one(name, file, settings, secrets)
            if result is None:
                uploaded.append(file.name)
            elif result.action is Action.ALREADY_OURS:
                existing = existing or result
            else:
                return result
        if uploaded:
            return UploadResult(Action.RESERVED,
                                f"reserved {name}: uploaded {', '.join(uploaded)} to {self._url}")
        assert existing is not None  # every file answered: no upload, no error
        return existing

    def _upload_one(self, name: str, file: Path, settings: UploadSettings,
                    secrets: tuple[str, ...]) -> UploadResult | None:
        """None when ``file`` was accepted, else what the index (or the network) said."""
        import twine.commands.upload

        try:
            twine.commands.upload.upload(settings, [str(file)])
        except requests.HTTPError as exc:
            if exc.response is None:
                return UploadResult(Action.FAILED, f"upload of {name} failed: "
                                                   f"{_describe(exc, secrets)}", transient=True,
                                    outcome_unknown=True)
            return _result_for_answer(name, file.name,
                                      _Answer.from_response(exc.response, secrets), secrets)
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            return UploadResult(Action.FAILED, f"cannot upload to {self._url}: "
                                               f"{_describe(exc, secrets)}")
        except requests.RequestException as exc:
            return UploadResult(Action.FAILED,
                                f"could not complete the upload of {name} to {self._url}: "
                                f"{_describe(exc, secrets)}", transient=True,
                                outcome_unknown=not _never_sent(exc))
        except twine_exceptions.TwineException as exc:
            return UploadResult(Action.FAILED, f"twine refused to upload {file.name}: "
                                               f"{_describe(exc, secrets)}")
        except Exception as exc:  # noqa: BLE001 - a backend answers, it does not raise
            log.debug("unexpected error uploading %s: %s", file.name, _describe(exc, secrets))
            return UploadResult(Action.FAILED, f"unexpected error uploading {file.name}: "
                                               f"{_describe(exc, secrets)}")
        return None


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly never reached the index (no connection was made)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and type(reason).__name__ in (
        "NewConnectionError", "NameResolutionError")


def _describe(exc: BaseException, secrets: tuple[str, ...]) -> str:
    return _one_line(redact(f"{type(exc).__name__}: {exc}", secrets), 400)


@hookimpl(trylast=True)
def namekeeper_reservation_backend(config: Config) -> ReservationBackend:
    """The built-in backend: twine, to ``[public] upload-url``."""
    return TwineReservationBackend(config.public)


__all__ = ["TwineReservationBackend", "is_transient", "parse_retry_after",
           "namekeeper_reservation_backend"]
