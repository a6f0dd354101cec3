"""The /profiles query: every workload's document, or one workload's in any format `run` offers."""

from __future__ import annotations

import json
from typing import Callable, NamedTuple, Optional

from exporter.config import WORKLOAD_KEYS
from exporter.core import profile

PARAMETERS = (*WORKLOAD_KEYS, "format")
# 2: the listing names what it is keyed by and how many workloads it left out.
LISTING_VERSION = 2
# profiles(None) -> (the first max documents in name order, how many workloads there are)
Profiles = Callable[[Optional[str]], "tuple[dict[str, dict], int]"]
CONTENT_TYPES = {"json": "application/json", "kubernetes": "application/yaml"}


class Answer(NamedTuple):
    status: str
    content_type: str
    body: bytes


def answer(params: dict[str, list[str]], profiles: Profiles, limit: int) -> Answer:
    """The reply to /profiles?<params>. profiles(name) gives documents per workload name, as the
    collector makes them, each naming its workload under its unused.by key ({"unit": "ssh.service",
    ...}; a container by its id, "container", and its runtime's name, "container_name", either of
    which is asked); profiles(None) the first `limit` of them."""
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
        documents, count = profiles(None)
        return _json({"version": LISTING_VERSION, "by": _key_of(documents), "max_workloads": limit,
                      "workloads": count, "truncated": count > len(documents), "profiles": documents})
    key, name = asked[0], params[asked[0]][0]
    documents, _ = profiles(name)
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


def _key_of(documents: dict[str, dict]) -> Optional[str]:
    """The unused.by key the documents name their workload under; None when there are none."""
    for document in documents.values():
        return next((key for key in WORKLOAD_KEYS if key in document), None)
    return None


def _json(document: dict) -> Answer:
    return Answer("200 OK", "application/json", json.dumps(document, indent=2).encode() + b"\n")


def _plain(status: str, text: str) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", text.encode())
