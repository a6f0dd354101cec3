"""The /profiles query: every workload's document, or one workload's in any format `run` offers."""

from __future__ import annotations

import json
from typing import NamedTuple

from . import profile
from .config import WORKLOAD_KEYS

PARAMETERS = (*WORKLOAD_KEYS, "format")
CONTENT_TYPES = {"json": "application/json", "kubernetes": "application/yaml"}


class Answer(NamedTuple):
    status: str
    content_type: str
    body: bytes


def answer(params: dict[str, list[str]], documents: dict[str, dict]) -> Answer:
    """The reply to /profiles?<params>; documents: per workload name, as the collector makes them,
    each naming its workload under its unused.by key ({"unit": "ssh.service", ...}; a container
    by its id, "container", and its runtime's name, "container_name", either of which is asked)."""
    unknown = sorted(set(params) - set(PARAMETERS))
    asked = [key for key in WORKLOAD_KEYS if key in params]
    if unknown or len(asked) > 1 or any(len(values) > 1 for values in params.values()):
        return _plain("400 Bad Request", f"the parameters are one of {', '.join(WORKLOAD_KEYS)}, and format "
                                         "(one of " + ", ".join(profile.FORMATS) + "), each given once\n")
    fmt = params.get("format", ["json"])[0]
    if fmt not in profile.FORMATS:
        return _plain("400 Bad Request", f"format must be one of {', '.join(profile.FORMATS)}\n")
    if not asked:
        if fmt != "json":
            return _plain("400 Bad Request", f"format {fmt} is for one workload: add ?{WORKLOAD_KEYS[0]}=NAME "
                                             "(or unit, process, container, as unused.by says)\n")
        return _json(documents)
    key, name = asked[0], params[asked[0]][0]
    document = documents.get(name)
    if document is None:  # a container may be asked for by its runtime's name, too
        document = next((d for d in documents.values() if name and d.get(f"{key}_name") == name), None)
    if document is None or name not in (document.get(key), document.get(f"{key}_name")):
        # The name is not echoed: it is the client's text.
        return _plain("404 Not Found", f"no profile for this {key} (profiles are kept per the config's unused.by)\n")
    if fmt == "json":
        return _json(document)
    text = profile.render(fmt, profile.from_document(document), **{key: document[key]})
    return Answer("200 OK", CONTENT_TYPES.get(fmt, "text/plain; charset=utf-8"), text.encode())


def _json(document: dict) -> Answer:
    return Answer("200 OK", "application/json", json.dumps(document, indent=2).encode() + b"\n")


def _plain(status: str, text: str) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", text.encode())
