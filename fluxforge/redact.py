"""The one redaction rule: credentials never reach a log line, a CLI message, JSON output or
Dagster metadata.

``redact(text)`` masks, in any text (a DSN, a URL, an exception message, a log line):

- the password of a URL's user info (``postgresql://user:pw@host``, ``http://key:secret@s3``),
  also when the URL is malformed (a password holding ``@`` or ``/``, no host, unbalanced quotes);
- ``key=value`` / ``key: value`` / ``"key": "value"`` pairs whose key names a secret (libpq's
  ``password=``, query strings ``?password=...&``, AWS ``X-Amz-Signature``/``Credential``,
  ``aws_secret_access_key``, tokens), quoted or not;
- every secret value registered with ``register_secret`` (the S3 keys in use, the embedded
  PostgreSQL's generated passwords), wherever it shows up.

``RedactFilter`` applies it to every log record; ``install_log_redaction`` puts it on the root
handlers and on the loggers of the AWS libraries (whose DEBUG lines print signed headers).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback

MASK = "***"

# keys whose value is a secret (case-insensitive, as a whole word or the end of a longer key
# such as aws_secret_access_key / x-amz-security-token / PGPASSWORD)
_SECRET_KEYS = (
    r"[\w.-]*password|passwd|pwd|[\w.-]*secret[\w-]*|[\w.-]*token|x-amz-signature|signature"
    r"|x-amz-credential|credential|access_key_id|[\w.-]*access_key|sslpassword|apikey|api_key"
)
_PAIR = re.compile(
    rf"""(?ix)
    (?P<key>\b(?:{_SECRET_KEYS}))
    (?P<sep>["']?\s*[=:]\s*)
    (?P<val>"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|[^\s&;,'"}}<>)]+)
    """
)
# scheme://user:password@ ... the password runs to the LAST '@' before whitespace or a quote,
# so a password holding '@', ':' or '/' is masked whole (over-masking beats a leak)
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*:/+[^\s:/@'\"]*:)(?P<pw>[^\s'\"]*)@")
# user:password@host without a scheme (libpq echoes parts of malformed URIs like this)
_BARE_USERINFO = re.compile(r"(?P<head>(?<![\w/])[\w.-]+:)(?P<pw>[^\s@'\"/:]+)@")

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value (>= 6 characters) so ``redact`` masks it anywhere."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def register_dsn_secrets(dsn: str | None) -> None:
    """Register the password of a DSN / URL, and its pieces between '@' and '/', as secrets:
    a password holding those characters is misparsed by libpq, which then echoes a piece of
    it as the host name ("failed to resolve host ...") where no pattern can recognise it."""
    if not dsn:
        return
    for m in _URL_USERINFO.finditer(dsn):
        register_secret(m["pw"])
        for piece in re.split(r"[@/]", m["pw"]):
            register_secret(piece)
    for m in _PAIR.finditer(dsn):
        register_secret(m["val"].strip("'\""))


def redact(text: object) -> str:
    """`text` (any object, str() taken) with every credential it carries masked."""
    out = str(text)
    if not out:
        return out
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for value in known:
        if value in out:
            out = out.replace(value, MASK)
    out = _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}@", out)
    out = _BARE_USERINFO.sub(lambda m: f"{m['head']}{MASK}@", out)
    return _PAIR.sub(_mask_pair, out)


def _mask_pair(m: re.Match[str]) -> str:
    val = m["val"]
    if val == MASK or val.strip("\"'") == MASK:
        return m.group(0)
    quote = val[0] if val[:1] in ("'", '"') else ""
    return f"{m['key']}{m['sep']}{quote}{MASK}{quote}"


def redact_exc(exc: BaseException) -> str:
    """``Type: message`` of an exception, redacted (for one-line CLI messages)."""
    return redact(f"{type(exc).__name__}: {exc}")


def _redact_record(record: logging.LogRecord) -> None:
    try:
        text = record.getMessage()
    except Exception:  # a bad format string is the logging module's to report
        return
    masked = redact(text)
    if masked != text:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactFilter(logging.Filter):
    """Masks credentials in a record's message and its formatted traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


REDACT_FILTER = RedactFilter()


def _redacted_excepthook(kind: type[BaseException], exc: BaseException, tb: object) -> None:
    """An uncaught exception's traceback, redacted (chained causes echo DSNs and URLs)."""
    text = "".join(traceback.format_exception(kind, exc, tb))  # type: ignore[arg-type]
    sys.stderr.write(redact(text))


_installed = False


def install_log_redaction() -> None:
    """Mask credentials in every log record of this process, whichever logger made it (the
    AWS libraries' DEBUG lines print signed headers, libpq errors echo DSNs): a record factory
    redacts each record as it is created, before any handler or filter sees it, the filter
    guards the root handlers against records built by hand, and uncaught exceptions print
    a redacted traceback. Idempotent; the CLI, the daemon
    and the Dagster code location call it once."""
    global _installed
    with _lock:
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: object, **kwargs: object) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _redact_record(record)
                return record

            logging.setLogRecordFactory(factory)
            sys.excepthook = _redacted_excepthook
            _installed = True
    for handler in logging.getLogger().handlers:
        if REDACT_FILTER not in handler.filters:
            handler.addFilter(REDACT_FILTER)


# client libraries whose DEBUG lines echo signed headers, endpoint URLs and request bodies
CLIENT_LOGGERS = ("botocore", "boto3", "s3transfer", "aiobotocore", "s3fs", "urllib3")


def quiet_client_debug() -> None:
    """Keep the AWS / HTTP client libraries at INFO even when the application logs DEBUG
    (``-v``): their debug lines are request dumps, credentials included (also masked above)."""
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
