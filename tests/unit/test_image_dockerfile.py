"""Dockerfile parser and word processing: every instruction, both forms, substitution, errors."""

from __future__ import annotations

import pytest

from core.errors import BuildError
from runtime.image import dockerfile as D


def kws(text: str) -> list[str]:
    return [i.keyword for i in D.parse(text).instructions]


def test_every_instruction_parses():
    text = """\
ARG BASE=busybox
FROM ${BASE} AS build
RUN echo shell form
RUN ["echo", "exec", "form"]
CMD echo hi
CMD ["echo", "hi"]
ENTRYPOINT /bin/sh
ENTRYPOINT ["/bin/sh", "-c"]
SHELL ["/bin/sh", "-ec"]
ENV A=1 B="two words"
ENV LEGACY value with spaces
ARG X
ARG Y=2
WORKDIR /app
USER nobody:nogroup
LABEL a=b "c d"=e
EXPOSE 80 53/udp
VOLUME /data /logs
VOLUME ["/v"]
COPY a b /dst/
COPY ["a", "/dst/a"]
COPY --from=build --chown=1:2 --chmod=755 /x /y
ADD --chown=nobody f.tar /opt/
STOPSIGNAL SIGTERM
MAINTAINER someone
from busybox
"""
    df = D.parse(text)
    assert [i.keyword for i in df.instructions] == [
        "ARG", "FROM", "RUN", "RUN", "CMD", "CMD", "ENTRYPOINT", "ENTRYPOINT", "SHELL", "ENV", "ENV", "ARG",
        "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE", "VOLUME", "VOLUME", "COPY", "COPY", "COPY", "ADD",
        "STOPSIGNAL", "MAINTAINER", "FROM"]
    ins = df.instructions
    assert ins[2].json_args is None and ins[3].json_args == ("echo", "exec", "form")
    assert ins[21].flags == {"from": "build", "chown": "1:2", "chmod": "755"}
    assert ins[21].args == "/x /y"
    assert ins[20].json_args == ("a", "/dst/a")
    assert ins[1].lineno == 2


def test_continuations_comments_and_blank_lines():
    text = "FROM busybox\nRUN echo a \\\n  # comment inside\n\n  && echo b\n# trailing\nCMD x\n"
    df = D.parse(text)
    assert df.instructions[1].args == "echo a && echo b"
    assert df.instructions[1].lineno == 2
    assert df.instructions[2].lineno == 7


def test_escape_directive_backtick():
    df = D.parse("# escape=`\nFROM busybox\nRUN echo a `\n  b\n")
    assert df.escape == "`"
    assert df.instructions[1].args == "echo a b"


@pytest.mark.parametrize("text,msg,line", [
    ("FROM busybox\nFROB x\n", "unknown instruction 'FROB'", 2),
    ("RUN echo\n", "missing FROM", 1),
    ("# only comment\n", "missing FROM", 1),
    ("ARG A\nRUN echo\nFROM busybox\n", "RUN before the first FROM", 2),
    ("FROM busybox\nRUN [\"echo\", \n", "malformed exec-form JSON", 2),
    ("FROM busybox\nCMD [\"a\", 1]\n", "JSON array of strings", 2),
    ("FROM busybox\nSHELL /bin/sh\n", "SHELL requires the JSON form", 2),
    ("FROM busybox\nCOPY onlyone\n", "at least two arguments", 2),
    ("FROM busybox\nCOPY --bogus=1 a b\n", "does not support the flag --bogus", 2),
    ("FROM busybox\nRUN --mount=type=cache x\n", "BuildKit", 2),
    ("FROM busybox\nCOPY --from a b\n", "needs a value", 2),
    ("FROM a b\n", "FROM expects", 1),
    ("FROM busybox AS 1bad\n", "invalid stage name", 1),
    ("FROM busybox\nONBUILD RUN x\n", "ONBUILD", 2),
    ("FROM busybox\nHEALTHCHECK CMD x\n", "HEALTHCHECK", 2),
    ("FROM busybox\nARG A B\n", "ARG takes one", 2),
    ("FROM busybox\nENV\n", "requires at least one argument", 2),
    ("# escape=x\nFROM busybox\n", "invalid escape directive", 1),
])
def test_errors_name_file_and_line(text, msg, line):
    with pytest.raises(BuildError) as ei:
        D.parse(text, "ctx/Dockerfile")
    assert f"ctx/Dockerfile:{line}:" in str(ei.value)
    assert msg in str(ei.value)


def test_parse_file_missing(tmp_path):
    with pytest.raises(BuildError, match="not found"):
        D.parse_file(tmp_path / "Dockerfile")


ENV = {"A": "alpha", "EMPTY": "", "P": "/usr"}


@pytest.mark.parametrize("text,expected", [
    ("$A", "alpha"),
    ("${A}", "alpha"),
    ("x${A}y", "xalphay"),
    ("${NOPE:-def}", "def"),
    ("${EMPTY:-def}", "def"),
    ("${EMPTY-def}", ""),
    ("${NOPE-def}", "def"),
    ("${A:+set}", "set"),
    ("${EMPTY:+set}", ""),
    ("${EMPTY+set}", "set"),
    ("${NOPE:+set}", ""),
    ("${NOPE:-${A}}", "alpha"),
    ("\\$A", "$A"),
    ("'$A'", "$A"),
    ('"$A b"', "alpha b"),
    ("$", "$"),
    ("$NOPE", ""),
    ("${P}/bin", "/usr/bin"),
])
def test_expand(text, expected):
    assert D.expand(text, ENV) == expected


def test_split_words_quotes_and_substitution():
    assert D.split_words('a "b c" \'d $A\' $A ${NOPE}', ENV) == ["a", "b c", "d $A", "alpha"]


@pytest.mark.parametrize("text,msg", [
    ("${A", "missing '}'"),
    ("${1x}", "bad substitution"),
    ("${A#x}", "unsupported substitution"),
    ("'open", "unterminated single quote"),
    ('"open', "unterminated double quote"),
])
def test_substitution_errors(text, msg):
    with pytest.raises(D.SubstitutionError, match=msg):
        D.split_words(text, ENV)


def test_kv_pairs_both_forms():
    assert D.parse_kv_pairs('A=1 B="two words" C=$A', ENV, "\\", "ENV") == [("A", "1"), ("B", "two words"),
                                                                            ("C", "alpha")]
    assert D.parse_kv_pairs("KEY some value $A", ENV, "\\", "ENV") == [("KEY", "some value alpha")]
    with pytest.raises(D.SubstitutionError, match="needs a value"):
        D.parse_kv_pairs("KEY", ENV, "\\", "ENV")
    with pytest.raises(D.SubstitutionError, match="not KEY=VALUE"):
        D.parse_kv_pairs("A=1 B", ENV, "\\", "ENV")


@pytest.mark.parametrize("word,expected", [("80", "80/tcp"), ("53/udp", "53/udp"), ("8000-8010/tcp", "8000-8010/tcp")])
def test_parse_port(word, expected):
    assert D.parse_port(word) == expected


@pytest.mark.parametrize("word", ["0", "70000", "80/icmp", "http"])
def test_parse_port_rejects(word):
    with pytest.raises(D.SubstitutionError, match="EXPOSE"):
        D.parse_port(word)


@pytest.mark.parametrize("text", ["", "   ", "\x0c"])
def test_kv_pairs_empty_or_whitespace_is_an_error(text):
    with pytest.raises(D.SubstitutionError, match="requires KEY=VALUE"):
        D.parse_kv_pairs(text, {}, "\\", "ENV")
