"""Container, pod and namespace names from the container runtimes' own state on the node.

No Kubernetes API: each runtime writes what the exporter needs beside the container.
- containerd (its CRI plugin): the OCI bundle's config.json, annotations io.kubernetes.cri.*,
  under /run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/.
- CRI-O: the bundle's config.json, annotations io.kubernetes.pod.name, .pod.namespace and
  .container.name (the kubelet's labels), under containers/storage's
  overlay-containers/<id>/userdata/ in /run/containers/storage or /var/lib/containers/storage.
- podman: the same containers/storage directories; its config.json names no container, so the
  name is the store's own: overlay-containers/containers.json, "names".
"""

from __future__ import annotations

import glob
import json
import logging
import os
import threading
from collections import OrderedDict
from typing import NamedTuple, Optional

log = logging.getLogger(__name__)

CONTAINERD_TASKS = "run/containerd/io.containerd.runtime.v2.task"
STORAGE_ROOTS = ("run/containers/storage", "var/lib/containers/storage")


class Names(NamedTuple):
    container: str = ""
    pod: str = ""
    namespace: str = ""


NONE = Names()

# (container name, pod name, namespace) annotation keys, per runtime, in the order tried.
ANNOTATION_KEYS = {
    "containerd": ("io.kubernetes.cri.container-name", "io.kubernetes.cri.sandbox-name",
                   "io.kubernetes.cri.sandbox-namespace"),
    "cri-o": ("io.kubernetes.container.name", "io.kubernetes.pod.name", "io.kubernetes.pod.namespace"),
}


def from_annotations(annotations: dict) -> Names:
    """The names an OCI config's annotations carry, from whichever runtime wrote them."""
    for keys in ANNOTATION_KEYS.values():
        values = [annotations.get(key) for key in keys]
        if any(isinstance(value, str) and value for value in values):
            return Names(*(value if isinstance(value, str) else "" for value in values))
    return NONE


class BadState(Exception):
    """A runtime's state for one container could not be read; the message says where and why."""


class ContainerNames:
    """Names per container id, read once when a container is first seen, cached (at most
    max_entries, the oldest forgotten first) until forget() says the container is gone.

    root: where the host's / is (the exporter in a container sees it under a mount)."""

    def __init__(self, root: str = "/", max_entries: int = 4096):
        self.root = root
        self.max_entries = max_entries
        self._names: OrderedDict[str, Names] = OrderedDict()
        self._lock = threading.Lock()  # scrapes and the held-set scan ask from their own threads

    def names(self, container_id: str) -> Names:
        if not container_id:
            return NONE
        with self._lock:
            return self._names_locked(container_id)

    def _names_locked(self, container_id: str) -> Names:
        known = self._names.get(container_id)
        if known is None:
            try:
                known = self._read(container_id)
            except BadState as err:
                log.warning("no names for container %s: %s", container_id[:12], err)
                known = NONE  # kept, so that it is said once per container
            self._names[container_id] = known
            while len(self._names) > self.max_entries:
                self._names.popitem(last=False)
        return known

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._names.pop(container_id, None)

    def _read(self, container_id: str) -> Names:
        for path in self._configs(container_id):
            config = _json(path)
            annotations = config.get("annotations") if isinstance(config, dict) else None
            if not isinstance(annotations, (dict, type(None))):
                raise BadState(f"{path}: annotations is not a JSON object")
            names = from_annotations(annotations or {})
            if names.container:
                return names
            podman = self._storage_name(os.path.dirname(os.path.dirname(os.path.dirname(path))), container_id)
            return names._replace(container=podman) if podman else names
        raise BadState(f"no config.json of it under {self.root} (containerd: {CONTAINERD_TASKS}/*/<id>; "
                       f"CRI-O, podman: {' or '.join(STORAGE_ROOTS)}/overlay-containers/<id>/userdata)")

    def _configs(self, container_id: str) -> list[str]:
        candidates = glob.glob(os.path.join(self.root, CONTAINERD_TASKS, "*", container_id, "config.json"))
        candidates += [os.path.join(self.root, storage, "overlay-containers", container_id, "userdata", "config.json")
                       for storage in STORAGE_ROOTS]
        return [path for path in candidates if os.path.lexists(path)]

    def _storage_name(self, overlay_containers: str, container_id: str) -> Optional[str]:
        """podman's name for the container, from containers/storage's containers.json."""
        path = os.path.join(overlay_containers, "containers.json")
        if not os.path.lexists(path):
            return None
        entries = _json(path)
        if not isinstance(entries, list):
            raise BadState(f"{path}: not a JSON list")
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == container_id:
                names = entry.get("names")
                return names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
        return None


def _json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise BadState(f"cannot read {path}: {err.strerror}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BadState(f"{path} is not valid JSON: {err}") from None
    if isinstance(data, (dict, list)):
        return data
    raise BadState(f"{path}: neither a JSON object nor a list")
