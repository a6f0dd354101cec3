"""The shell examples of README.md and docs/: they parse, their flags exist, and what they name is there."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter import __version__, cli, trace
from exporter.recommend import run
from support import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PARSERS = {None: cli.parser, "trace": trace.parser, "run": run.parser}


def blocks(language: str, path: Path) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def commands(path: Path) -> list[list[str]]:
    """Each command of the file's sh blocks, continuation lines joined, comments dropped, pipes split."""
    found = []
    for block in blocks("sh", path):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\s(?:\||&&)\s", line):
                words = shlex.split(part, comments=True)
                if words:
                    found.append(words)
    return found


def all_commands(program: str) -> list[tuple[str, list[str]]]:
    return [(path.name, words) for path in DOCUMENTS for words in commands(path) if Path(words[0]).name == program]


def test_the_documents_have_shell_examples():
    assert len(all_commands("capability-exporter")) >= 8
    assert all_commands("make") and all_commands("docker")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_sh_block_parses(path):
    for block in blocks("sh", path):
        done = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
        assert done.returncode == 0, f"{path.name}:\n{block}\n{done.stderr}"


def exporter_argv(words: list[str]) -> tuple[str | None, list[str]]:
    argv = words[1:]
    if argv and argv[0] in PARSERS:
        return argv[0], argv[1:]
    return None, argv


@pytest.mark.parametrize("where,words", all_commands("capability-exporter"), ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_every_capability_exporter_example_parses_with_the_real_flags(where, words):
    """The real parsers take each example (a bad flag exits 2); run's COMMAND is checked in turn."""
    subcommand, argv = exporter_argv(words)
    args = PARSERS[subcommand]().parse_args(argv)
    if subcommand == "run":
        assert args.command, f"{where}: run without a command: {words}"
        if Path(args.command[0]).name == "capability-exporter":
            test_every_capability_exporter_example_parses_with_the_real_flags(where, args.command)


@pytest.mark.parametrize("where,words", all_commands("make"), ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_every_make_example_names_a_real_target(where, words):
    # -n: print what would run; a missing target or variable error fails.
    done = subprocess.run(["make", "-n", "-C", str(ROOT), *words[1:]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{where}: {shlex.join(words)}: {done.stderr}"


def test_the_install_examples_name_files_of_this_checkout():
    paths = [word for _, words in all_commands("install") + all_commands("kubectl") for word in words
             if word.startswith(("config/", "deploy/"))]
    assert paths
    for path in paths:
        assert (ROOT / path).exists(), path


def test_the_docker_examples_build_and_run_the_versioned_image():
    """The container test (make test-container) runs the README's docker run for real; here: the tag."""
    docker = [words for _, words in all_commands("docker")]
    built = [words[words.index("-t") + 1] for words in docker if words[1] == "build"]
    ran = [words[-1] for words in docker if words[1] == "run"]
    daemonset = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "daemonset.yaml").read_text())
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    assert built and ran
    assert set(built) == set(ran) == {container["image"]} == {f"capability-exporter:{__version__}"}


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_yaml_block_parses(path):
    for block in blocks("yaml", path):
        assert isinstance(yaml.safe_load(block), dict), f"{path.name}:\n{block}"


def test_every_link_to_docs_resolves():
    for path in DOCUMENTS:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).is_file(), f"{path.name} links to {target}"
