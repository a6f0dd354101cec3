"""/profiles' query: one workload's document in each of run's formats, and the refusals."""

import json

import pytest
import yaml

from exporter.core import profile
from exporter.core.profile import CheckCount, Profile
from exporter.serve import profile_query


def documents():
    unit = Profile("tracepoint", "excluded", checks=[CheckCount("svc", "CAP_NET_BIND_SERVICE", True, 3, 0)],
                   held=["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"])
    return {"web.service": profile.document(unit, unit="web.service")}


def served(docs: dict[str, dict]):
    """What the collector's profiles(name) gives: here every document, whichever is asked."""
    return lambda name: (docs, len(docs))


def ask(query: dict) -> profile_query.Answer:
    return profile_query.answer({key: [value] for key, value in query.items()}, served(documents()), 100)


def test_one_units_document_is_run_json():
    reply = ask({"unit": "web.service"})
    assert reply.status == "200 OK" and reply.content_type == "application/json"
    doc = json.loads(reply.body)
    assert doc == documents()["web.service"]
    assert doc["unit"] == "web.service" and doc["recommendation"]["needed"] == ["CAP_NET_BIND_SERVICE"]
    assert doc["recommendation"]["unused"] == ["CAP_NET_RAW"]


def test_every_run_format_is_served():
    for fmt in [f for f in profile.FORMATS if f != "json"]:
        reply = ask({"unit": "web.service", "format": fmt})
        assert reply.status == "200 OK", fmt
        assert reply.body.decode() == profile.render(fmt, profile.from_document(documents()["web.service"]),
                                                      unit="web.service")
    systemd = ask({"unit": "web.service", "format": "systemd"}).body.decode()
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in systemd
    kubernetes = yaml.safe_load(ask({"unit": "web.service", "format": "kubernetes"}).body)
    assert kubernetes["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert ask({"unit": "web.service", "format": "docker"}).body.decode().endswith(
        "--cap-drop=ALL --cap-add=NET_BIND_SERVICE\n")


@pytest.mark.parametrize("query", [{"comm": "web.service"}, {"container": "web.service"}, {"unit": "other"}])
def test_a_workload_under_another_key_or_name_is_not_found(query):
    assert ask(query).status == "404 Not Found"


def test_a_container_is_asked_for_by_its_id_or_its_runtimes_name():
    cid = "e" * 64
    doc = profile.document(Profile("fexit", "excluded", held=["CAP_CHOWN"]), container=cid, container_name="web")
    documents = {cid: doc}
    for name in (cid, "web"):
        reply = profile_query.answer({"container": [name]}, served(documents), 100)
        assert reply.status == "200 OK" and json.loads(reply.body) == doc
    assert profile_query.answer({"container": ["other"]}, served(documents), 100).status == "404 Not Found"
    assert profile_query.answer({"container": [""]}, served(documents), 100).status == "404 Not Found"
