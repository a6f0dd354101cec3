"""Container, pod and namespace names from runtime state: the annotation shapes of containerd's CRI
plugin and CRI-O, podman's store, and state that is missing, unreadable or malformed."""

import json
import logging

import pytest

from exporter.core import runtimes
from exporter.core.runtimes import ContainerNames, Names

ID = "0123456789abcdef" * 4

# containerd's CRI plugin (pkg/cri/annotations): an application container and its pod's sandbox.
CONTAINERD_CONTAINER = {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.container-name": "nginx",
    "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25",
    "io.kubernetes.cri.sandbox-id": "f" * 64,
    "io.kubernetes.cri.sandbox-name": "web-7d4b9c-x2x8q",
    "io.kubernetes.cri.sandbox-namespace": "shop",
    "io.kubernetes.cri.sandbox-uid": "3e0b7a52-6a3c-4f3e-9d2b-6f1d2c3b4a5e",
}
CONTAINERD_SANDBOX = {
    "io.kubernetes.cri.container-type": "sandbox",
    "io.kubernetes.cri.sandbox-id": "f" * 64,
    "io.kubernetes.cri.sandbox-name": "web-7d4b9c-x2x8q",
    "io.kubernetes.cri.sandbox-namespace": "shop",
    "io.kubernetes.cri.sandbox-uid": "3e0b7a52-6a3c-4f3e-9d2b-6f1d2c3b4a5e",
    "io.kubernetes.cri.sandbox-log-directory": "/var/log/pods/shop_web-7d4b9c-x2x8q_3e0b7a52",
}
# CRI-O: the kubelet's labels copied into the annotations, beside CRI-O's own io.kubernetes.cri-o.*.
CRIO_CONTAINER = {
    "io.kubernetes.container.name": "nginx",
    "io.kubernetes.pod.name": "web-7d4b9c-x2x8q",
    "io.kubernetes.pod.namespace": "shop",
    "io.kubernetes.pod.uid": "3e0b7a52-6a3c-4f3e-9d2b-6f1d2c3b4a5e",
    "io.kubernetes.cri-o.ContainerName": "k8s_nginx_web-7d4b9c-x2x8q_shop_3e0b7a52-6a3c-4f3e-9d2b-6f1d2c3b4a5e_0",
    "io.kubernetes.cri-o.ContainerType": "container",
    "io.kubernetes.cri-o.SandboxID": "f" * 64,
}
CRIO_SANDBOX = {
    "io.kubernetes.container.name": "POD",
    "io.kubernetes.pod.name": "web-7d4b9c-x2x8q",
    "io.kubernetes.pod.namespace": "shop",
    "io.kubernetes.cri-o.ContainerName": "k8s_POD_web-7d4b9c-x2x8q_shop_3e0b7a52-6a3c-4f3e-9d2b-6f1d2c3b4a5e_0",
    "io.kubernetes.cri-o.ContainerType": "sandbox",
}
# podman: no names among its annotations.
PODMAN = {"io.container.manager": "libpod", "io.podman.annotations.autoremove": "FALSE",
          "org.opencontainers.image.stopSignal": "15"}


@pytest.mark.parametrize("annotations, names", [
    (CONTAINERD_CONTAINER, Names("nginx", "web-7d4b9c-x2x8q", "shop")),
    (CONTAINERD_SANDBOX, Names("", "web-7d4b9c-x2x8q", "shop")),
    (CRIO_CONTAINER, Names("nginx", "web-7d4b9c-x2x8q", "shop")),
    (CRIO_SANDBOX, Names("POD", "web-7d4b9c-x2x8q", "shop")),
    (PODMAN, Names()),
    ({}, Names()),
    ({"io.kubernetes.cri.container-name": 7}, Names()),
])
def test_names_from_annotations(annotations, names):
    assert runtimes.from_annotations(annotations) == names


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def test_containerd_bundle(tmp_path):
    write(tmp_path / runtimes.CONTAINERD_TASKS / "k8s.io" / ID / "config.json", {"annotations": CONTAINERD_CONTAINER})
    assert ContainerNames(str(tmp_path)).names(ID) == Names("nginx", "web-7d4b9c-x2x8q", "shop")


@pytest.mark.parametrize("storage", runtimes.STORAGE_ROOTS)
def test_crio_bundle(tmp_path, storage):
    write(tmp_path / storage / "overlay-containers" / ID / "userdata" / "config.json", {"annotations": CRIO_CONTAINER})
    assert ContainerNames(str(tmp_path)).names(ID) == Names("nginx", "web-7d4b9c-x2x8q", "shop")


def test_podman_name_from_its_store(tmp_path):
    store = tmp_path / "var/lib/containers/storage/overlay-containers"
    write(store / ID / "userdata" / "config.json", {"annotations": PODMAN})
    write(store / "containers.json", [{"id": "9" * 64, "names": ["other"]}, {"id": ID, "names": ["capexp-web"]}])
    assert ContainerNames(str(tmp_path)).names(ID) == Names("capexp-web", "", "")


def test_read_once_and_forgotten(tmp_path):
    config = tmp_path / runtimes.CONTAINERD_TASKS / "k8s.io" / ID / "config.json"
    write(config, {"annotations": CONTAINERD_CONTAINER})
    names = ContainerNames(str(tmp_path))
    assert names.names(ID).container == "nginx"
    write(config, {"annotations": {**CONTAINERD_CONTAINER, "io.kubernetes.cri.container-name": "renamed"}})
    assert names.names(ID).container == "nginx"  # read when first seen, not again
    names.forget(ID)
    assert names.names(ID).container == "renamed"


def test_the_cache_is_bounded(tmp_path):
    names = ContainerNames(str(tmp_path), max_entries=2)
    for i in range(5):
        names.names(f"{i:064x}")
    assert list(names._names) == [f"{3:064x}", f"{4:064x}"]


def bad_states():
    def missing(root):
        pass

    def unreadable(root):  # root reads any file: a directory where the file should be cannot be read
        (root / runtimes.CONTAINERD_TASKS / "k8s.io" / ID / "config.json").mkdir(parents=True)

    def malformed(root):
        write(root / runtimes.CONTAINERD_TASKS / "k8s.io" / ID / "config.json", '{"annotations": {')

    def not_an_object(root):
        write(root / runtimes.CONTAINERD_TASKS / "k8s.io" / ID / "config.json", {"annotations": ["x"]})

    def bad_podman_store(root):
        store = root / "var/lib/containers/storage/overlay-containers"
        write(store / ID / "userdata" / "config.json", {"annotations": PODMAN})
        write(store / "containers.json", "not json")

    return [(missing, "no config.json of it"), (unreadable, "cannot read"), (malformed, "is not valid JSON"),
            (not_an_object, "annotations is not a JSON object"), (bad_podman_store, "is not valid JSON")]


@pytest.mark.parametrize("make, said", bad_states(), ids=lambda v: getattr(v, "__name__", ""))
def test_bad_state_gives_empty_names_and_is_logged_once(tmp_path, caplog, make, said):
    make(tmp_path)
    names = ContainerNames(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="exporter.core.runtimes"):
        assert names.names(ID) == Names()
        assert names.names(ID) == Names()
    assert len(caplog.records) == 1 and said in caplog.records[0].getMessage()
    assert ID[:12] in caplog.records[0].getMessage()
