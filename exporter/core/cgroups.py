"""Cgroup v2 ids, as bpf_get_current_cgroup_id() reports them, to cgroup paths."""

from __future__ import annotations

import logging
import os
from typing import Optional

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


class CgroupNames:
    """Resolve ids by walking the cgroup2 tree: a cgroup's id is its directory's inode number."""

    def __init__(self, mount: Optional[str]):
        self.mount = mount
        self._paths: dict[int, str] = {}
        self._may_refresh = True

    def new_scrape(self) -> None:
        """Allow one rescan in this scrape, however many ids are unknown."""
        self._may_refresh = True

    def name(self, cgroup_id: int) -> str:
        if cgroup_id not in self._paths and self._may_refresh:
            self._may_refresh = False
            self.refresh()
        return self._paths.get(cgroup_id, UNKNOWN)

    def exists(self, cgroup_id: int) -> bool:
        """Whether this cgroup is there now (its directory, with its inode): one stat, no rescan."""
        path = self._paths.get(cgroup_id)
        if path is None or not self.mount:
            return False
        try:
            return os.stat(os.path.join(self.mount, path.lstrip("/"))).st_ino == cgroup_id
        except OSError:
            return False

    def refresh(self) -> None:
        """Rescan the tree; cgroups that are gone keep their last known path."""
        if not self.mount:
            return
        for dirpath, _, _ in os.walk(self.mount):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue  # removed while we walked
            relative = "/" + os.path.relpath(dirpath, self.mount)
            self._paths[ino] = "/" if relative == "/." else relative
