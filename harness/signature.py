"""What a failure is: its exception type, a stable signature, a skip category, a bounded output tail.

Standard library only: the pytest plugin uses it in the test process (on failing, erroring and
skipped tests only), `harness ingest` on JUnit XML, and migration 0006 to backfill stored rows.

The signature is the first 16 hex digits of the sha1 of the exception type and the failure message
with everything that differs between two runs of the same failure replaced by a placeholder: tensor
and array values, numbers, hex addresses, uuids, temporary paths (and the directories of other
absolute paths), line numbers, and the model's own name. The same broken code path in 300 models is
one signature; two different exceptions, or two different messages, never are (their types or their
normalised texts differ).
"""

from __future__ import annotations

import hashlib
import re

SIGNATURE_CHARS = 16
TAIL_BYTES = 8192  # captured output kept per failing test (its end)
NORMALISED_CHARS = 1000  # how much of the normalised message the signature covers
NOT_APPLICABLE = "not-applicable"
SKIPPED = "skipped"
SKIP_CATEGORIES = (NOT_APPLICABLE, SKIPPED)

# A leading "pkg.mod.Name: " of an `exconly()` line: the exception's (qualified) type.
_EXC_PREFIX = re.compile(r"^\s*(?:E\s+)?((?:[A-Za-z_]\w*\.)*\w*(?:Error|Exception|Exit|Interrupt|Warning|"
                         r"Failed|Failure|Timeout|Skipped|KeyboardInterrupt|StopIteration))(?::|$)")
_TENSOR = re.compile(r"\b(tensor|array|Parameter)\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)", re.S)
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_TEMP = re.compile(r"(?:[A-Za-z]:)?[/\\](?:private[/\\])?(?:tmp|var[/\\]tmp|var[/\\]folders|dev[/\\]shm|"
                   r"[^\s'\"]*?[/\\](?:Temp|pytest-of-[^/\\\s'\"]+))(?:[/\\][^\s'\":,;)\]}]*)?")
_PYTEST_TMP = re.compile(r"\bpytest-of-[^/\\\s'\"]+[/\\]pytest-\d+[/\\][^/\\\s'\"]+|\bpytest-\d+\b")
_ABS_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[/\\][\w.+-]+){2,}")
_LINE = re.compile(r"\b(line |:)\d+\b")
_HASHLIKE = re.compile(r"\b[0-9a-f]{12,}\b")
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w])")
_LIST = re.compile(r"<n>(?:\s*,\s*(?:<n>|\.\.\.))+")
_NESTED = re.compile(r"[\[(]\s*(?:<n>|[\[(]<n>[\])])(?:\s*,\s*(?:<n>|[\[(]<n>[\])]|\.\.\.))*\s*,?\s*[\])]")
_SPACE = re.compile(r"\s+")

# Skip reasons that say "this test does not apply here" (platform, hardware, runner group, optional
# dependency, gated suite) rather than "a developer turned this test off".
_NOT_APPLICABLE = re.compile(
    r"could not import|no module named|not installed|importorskip|optional dependenc|"
    r"\bcuda\b|cuda|\bgpus?\b|\bdevices?\b|device_count|\bmps\b|\bxpu\b|\btpu\b|\bnpu\b|\brocm\b|"
    r"accelerat|hardware|compute capability|\bsm_?\d+|bf16|bfloat16 not|fp8|flash[_ -]?attn|"
    r"platform|win32|windows|darwin|mac ?os|linux|\bcpu\b|runner[ _-]?group|multi[ _-]?gpu|single[ _-]?gpu|"
    r"\brun_[a-z_]+|\bslow\b|gated|requires?\b|required|only (?:on|for|runs?|with|supported)|"
    r"not (?:available|supported|applicable)|unsupported|no (?:gpu|cuda|device)|\bvram\b|"
    r"flash ?attention|entry point|this (?:torch|python|build|version|machine|platform|install) "
    r"(?:has no|lacks|does not|doesn't|cannot|can't)|\btorch (?:version|[<>]=?) ?\d",
    re.I)


def exception_type(message: str | None, typename: str | None = None) -> str | None:
    """The failure's exception type: `typename` when the test process knew it, else the leading
    `Type:` of an `exconly()` message (None when neither says)."""
    if typename:
        return typename[:255]
    if not message:
        return None
    m = _EXC_PREFIX.match(message)
    if m:
        return m.group(1)[:255]
    return "AssertionError" if message.lstrip().startswith("assert ") else None  # pytest's rewritten asserts


def _model_pattern(model: str) -> re.Pattern[str] | None:
    """`model` as written in code and messages (llama-2-7b, llama_2_7b, Llama2_7b...), case-insensitive,
    never inside a longer lower-case word (model `opt` does not match `optional`)."""
    parts = [re.escape(p) for p in re.split(r"[-_. ]+", model) if p]
    if not parts or len(model) < 2:
        return None
    body = r"[-_. ]?".join(parts)
    return re.compile(rf"(?<![A-Za-z])(?i:{body})(?![a-z])")


_PARAM = re.compile(r"\[([A-Za-z][A-Za-z0-9_.]*(?:-[A-Za-z0-9_.]+)*)\]$")


def model_of_nodeid(nodeid: str | None) -> str | None:
    """The single parameter of a test id such as `test_forward[llama]` (the model a per-model test is
    parametrised with), for sources that name no model (JUnit XML); None otherwise."""
    m = _PARAM.search(nodeid or "")
    return m.group(1) if m and len(m.group(1)) >= 3 and "-" not in m.group(1) else None


def normalise(message: str | None, model: str | None = None) -> str:
    """The parts of `message` that say what failed, with what differs between runs and between
    models replaced by placeholders."""
    if not message:
        return ""
    text = message[:20000]
    text = _TENSOR.sub(lambda m: f"{m.group(1)}(<t>)", text)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("0x<a>", text)
    text = _PYTEST_TMP.sub("<tmp>", text)
    text = _TEMP.sub("<tmp>", text)
    text = _ABS_PATH.sub(lambda m: "<path>/" + re.split(r"[/\\]", m.group(0))[-1], text)
    if model:
        pattern = _model_pattern(model)
        if pattern is not None:
            text = pattern.sub("<model>", text)
    text = _LINE.sub(lambda m: f"{m.group(1)}<n>", text)
    text = _HASHLIKE.sub("<h>", text)
    text = _NUMBER.sub("<n>", text)
    for _ in range(4):  # [[1, 2], [3, 4]] -> [<n>]: shapes and values of any size read the same
        collapsed = _NESTED.sub("[<n>]", _LIST.sub("<n>", text))
        if collapsed == text:
            break
        text = collapsed
    return _SPACE.sub(" ", text).strip()[:NORMALISED_CHARS]


def signature(exception: str | None, message: str | None, model: str | None = None) -> str | None:
    """The failure signature: 16 hex digits of sha1(exception type, normalised message); None when
    there is neither a type nor a message."""
    if not exception and not message:
        return None
    body = normalise(message, model)
    if exception:  # the message of `exconly()` repeats the type: keep it once
        short = exception.rsplit(".", 1)[-1]
        for prefix in (exception, short):
            if body.startswith(prefix + ":") or body == prefix:
                body = body[len(prefix) + 1:].strip()
                break
    key = f"{exception or ''}\x1f{body}"
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:SIGNATURE_CHARS]


def skip_category(reason: str | None, xfail: bool = False) -> str:
    """`not-applicable` for a skip that a platform, hardware, runner-group, optional-dependency or
    gated-suite condition caused; `skipped` for an explicit skip (or xfail) by a developer."""
    if xfail or not reason:
        return SKIPPED
    return NOT_APPLICABLE if _NOT_APPLICABLE.search(reason) else SKIPPED


def tail(text: str | None, limit: int = TAIL_BYTES) -> str | None:
    """The last `limit` UTF-8 bytes of `text` (NULs escaped), marked when cut; None for no text."""
    if not text:
        return None
    cut = len(text) > limit
    text = text[-limit:] if cut else text  # at least `limit` bytes when cut: one or more per character
    if "\x00" in text:
        text = text.replace("\x00", "\\0")
    data = text.encode("utf-8", "surrogatepass")
    if not cut and len(data) <= limit:
        return text
    marker = "[… earlier output cut]\n"
    keep = limit - len(marker.encode("utf-8"))
    return marker + data[len(data) - keep:].decode("utf-8", "ignore")


__all__ = ["NOT_APPLICABLE", "SKIPPED", "SKIP_CATEGORIES", "exception_type", "model_of_nodeid", "normalise", "signature",
           "skip_category", "tail"]
