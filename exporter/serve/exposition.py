"""/metrics without per-sample overhead: big families carry their sample lines pre-rendered.

prometheus_client formats every sample anew at every scrape (label names validated, label values
escaped and sorted, the value converted), which at 10k series costs more than reading the maps.
A RenderedFamily holds each series as its label text, escaped and sorted once (the collector
caches it per map key across scrapes), and the value; encode() writes those lines directly,
in either text format, and hands every other family to prometheus_client's own encoder, so
that headers, small families and unusual requests come out exactly as prometheus_client makes
them. server.py serves what encode() makes, chunk by chunk.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Iterator, Optional, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# Name escaping schemes under which a valid legacy name (all of ours) is written as it is.
PLAIN_ESCAPING = (UNDERSCORES, ALLOWUTF8)
OPENMETRICS = "application/openmetrics-text"
EOF = b"# EOF\n"
# Sample lines joined at once: their strings are freed and reused piece by piece, so that a
# scrape of 50k series does not leave the heap holding 100k line strings' worth of memory.
# Each piece is a chunk of the response. 512 lines, against 2048: 0.8 MB less RSS after
# 10k-series scrapes (256 saved no more).
LINES_PER_PIECE = 512


def escape_value(value: str) -> str:
    """A label value as both text formats write it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """name="value" pairs, sorted by name as prometheus_client sorts them, without braces."""
    return ",".join(f'{n}="{escape_value(v)}"' for n, v in sorted(zip(names, values)))


_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def labels_of(text: str) -> dict[str, str]:
    """The labels that label_text wrote into text: its exact inverse."""
    return {name: _ESCAPED.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)
            for name, value in _PAIR.findall(text)}


class RenderedFamily(Metric):
    """A metric family whose samples are (label text, value).

    It is a Metric all the same: `samples` builds prometheus_client's Samples, the labels read
    back from the text, when something other than this module's writer asks for them (tests, a
    name[] filtered scrape). The label values themselves are not kept: at 10k series they would
    be a tuple and a string more per series, in the collector's cache across scrapes."""

    def __init__(self, name: str, documentation: str, typ: str, label_names: Sequence[str], suffix: str = "",
                 texts: Optional[list[str]] = None, values: Optional[list] = None):
        """texts and values: the series so far, in parallel lists (which another family may share:
        the checks and the denials are the same series)."""
        super().__init__(name, documentation, typ)
        self.label_names = tuple(label_names)
        self.sample_name = name + suffix
        # Parallel lists: no container per series for the garbage collector to walk.
        self.texts: list[str] = [] if texts is None else texts
        self.values: list = [] if values is None else values

    def add(self, text: str, value) -> None:
        """One series: its label text (label_text of its values) and its value."""
        self.texts.append(text)
        self.values.append(value)

    def add_metric(self, values: Sequence[str], value) -> None:
        self.add(label_text(self.label_names, values), value)

    @property
    def samples(self) -> list[Sample]:
        return [Sample(self.sample_name, labels_of(text), value) for text, value in zip(self.texts, self.values)]

    @samples.setter
    def samples(self, samples: list[Sample]) -> None:
        if samples:
            raise AttributeError("a RenderedFamily's samples are added with add()")

    def header(self) -> Metric:
        return Metric(self.name, self.documentation, self.type)

    def lines(self) -> Iterator[str]:
        """The sample lines, a few thousand at a time."""
        prefix = self.sample_name + "{"
        texts, values = self.texts, self.values
        for start in range(0, len(texts), LINES_PER_PIECE):
            end = start + LINES_PER_PIECE
            yield "".join([f"{prefix}{text}}} {value}.0\n" if type(value) is int and 0 <= value < 1_000_000
                           else f"{prefix}{text}}} {floatToGoString(value)}\n"
                           for text, value in zip(texts[start:end], values[start:end])])


class _Families:
    """A collector of given families, for prometheus_client's encoders."""

    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families


def encode(families: list[Metric], encoder: Callable, content_type: str) -> tuple[bytes, ...]:
    """The exposition of families in the format encoder makes (one that choose_encoder chose), in
    chunks that are sent one after the other: never joined into one copy of the whole."""
    escaping = getattr(encoder, "keywords", {}).get("escaping", UNDERSCORES)
    rendered = [f for f in families if isinstance(f, RenderedFamily)]
    if not rendered or escaping not in PLAIN_ESCAPING:
        return (encoder(_Families(families)),)
    openmetrics = content_type.startswith(OPENMETRICS)

    def without_eof(output: bytes) -> bytes:
        return output[:-len(EOF)] if openmetrics and output.endswith(EOF) else output

    parts = [without_eof(encoder(_Families(f for f in families if not isinstance(f, RenderedFamily))))]
    for family in rendered:
        parts.append(without_eof(encoder(_Families([family.header()]))))
        parts.extend(piece.encode("utf-8") for piece in family.lines())
    if openmetrics:
        parts.append(EOF)
    return tuple(parts)
