"""Images from and to registries (``image pull``/``image push``, ``FROM host[:port]/name:tag``) via skopeo.

Why skopeo: the registry protocol (token auth, manifest lists, chunked blob uploads, mirrors) is
well served by a Debian tool that already reads and writes OCI layouts; a hand-written client would
be a second, weaker one. So a pull is ``skopeo copy docker://REF oci-archive:TMP`` followed by the
store's own validated :func:`runtime.image.transfer.load` (every blob digest and layer member checked,
nothing written on error), and a push is :func:`~runtime.image.transfer.save` followed by ``skopeo
copy --preserve-digests oci-archive:TMP docker://REF``: the digest in the registry is the image's id
here, and an image pushed and pulled back has the digest it had.

Credentials come from where Docker and podman keep them: skopeo reads ``$REGISTRY_AUTH_FILE``,
``${XDG_RUNTIME_DIR}/containers/auth.json`` and ``~/.docker/config.json``; ``--authfile`` names
another. TLS is verified except for loopback registries (``localhost``, ``127.0.0.1``, ``[::1]``,
as Docker treats them) or when the user says ``--tls-verify=false``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from core.errors import ImageError, UsageError

# Docker's reference grammar (distribution/reference), as far as a name here needs it.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF_RE = re.compile(
    rf"^(?:(?P<host>(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    rf"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?)/)?"
    rf"(?P<repo>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?"
    rf"(?:@(?P<digest>sha256:[0-9a-f]{{64}}))?$")
DEFAULT_REGISTRY = "docker.io"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SKOPEO_TIMEOUT_S = 600


@dataclass(frozen=True)
class RegistryRef:
    host: str          # registry host[:port]; docker.io when the reference names none
    repository: str    # e.g. library/python or team/app
    tag: str           # "latest" when neither tag nor digest is given
    digest: str = ""   # sha256:... when pinned
    explicit_host: bool = True

    @property
    def remote(self) -> str:
        """``host/repo:tag`` or ``host/repo@digest`` for skopeo's docker:// transport."""
        return f"{self.host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")

    @property
    def local_name(self) -> str:
        """The name in the store: as the user wrote it (``localhost:5000/app:1``; Docker Hub images
        keep their short name, ``python:3.12-slim``)."""
        repo = self.repository.removeprefix("library/") if not self.explicit_host else self.repository
        prefix = f"{self.host}/" if self.explicit_host else ""
        return f"{prefix}{repo}:{self.tag}"

    @property
    def loopback(self) -> bool:
        host = self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host.split("]")[0] + "]"
        return host in LOOPBACK_HOSTS


def names_registry(ref: str) -> bool:
    """Does ``ref`` name its registry (``localhost:5000/app``, ``quay.io/x/y``), as Docker decides:
    a first component with a ``.`` or ``:``, or ``localhost``."""
    first, sep, _ = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def parse_ref(ref: str) -> RegistryRef:
    text = ref.strip()
    m = _REF_RE.match(text)
    if not m:
        raise UsageError(f"invalid image reference {ref!r} (expected [HOST[:PORT]/]NAME[:TAG][@sha256:...], "
                         "lower-case name)")
    host, repo = m.group("host"), m.group("repo")
    if host and not names_registry(text):  # "team/app": a Docker Hub path, not a host
        host, repo = None, f"{host}/{repo}"
        if not re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", repo):
            raise UsageError(f"invalid image reference {ref!r} (lower-case name components)")
    if host:
        return RegistryRef(host=host, repository=repo, tag=m.group("tag") or "latest", digest=m.group("digest") or "")
    if "/" not in repo:
        repo = "library/" + repo
    return RegistryRef(host=DEFAULT_REGISTRY, repository=repo, tag=m.group("tag") or "latest",
                       digest=m.group("digest") or "", explicit_host=False)


@dataclass(frozen=True)
class Access:
    """How to talk to a registry: the auth file (None: skopeo's usual search) and TLS verification
    (None: verify unless the registry is on loopback)."""

    authfile: str | None = None
    tls_verify: bool | None = None

    def verify(self, r: RegistryRef) -> bool:
        return (not r.loopback) if self.tls_verify is None else self.tls_verify

    def auth_args(self) -> list[str]:
        if self.authfile is None:
            return []
        if not Path(self.authfile).is_file():
            raise UsageError(f"--authfile {self.authfile}: no such file")
        return ["--authfile", self.authfile]


def _skopeo(args: list[str], r: RegistryRef, verb: str) -> None:
    cmd = ["skopeo", "--command-timeout", f"{SKOPEO_TIMEOUT_S}s", *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=SKOPEO_TIMEOUT_S + 30,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise ImageError("skopeo is not installed (run make setup)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{verb} {r.remote}: registry {r.host} did not answer within {SKOPEO_TIMEOUT_S} s") from exc
    if p.returncode != 0:
        raise ImageError(f"{verb} {r.remote}: {explain(p.stderr, r)}")


# skopeo's (Go's) wording -> one sentence for the user; first match wins
_CAUSES = (
    (re.compile(r"connection refused"), "cannot reach registry {host} (connection refused)"),
    (re.compile(r"no such host|server misbehaving|Temporary failure in name resolution"),
     "cannot resolve registry host {host}"),
    (re.compile(r"i/o timeout|deadline exceeded|network is unreachable|no route to host"),
     "cannot reach registry {host} (network unreachable or timed out)"),
    (re.compile(r"http: server gave HTTP response to HTTPS client"),
     "registry {host} speaks plain HTTP; use --tls-verify=false if you trust it"),
    (re.compile(r"x509|certificate"), "registry {host}: TLS certificate not trusted ({detail})"),
    (re.compile(r"unauthorized|authentication required|denied", re.I),
     "registry {host} refused access (credentials: --authfile, ${{XDG_RUNTIME_DIR}}/containers/auth.json "
     "or ~/.docker/config.json)"),
    (re.compile(r"manifest unknown|name unknown|not found", re.I), "no such image in registry {host}"),
)


def explain(stderr: str, r: RegistryRef) -> str:
    """One line from skopeo's (often multi-line, logrus-formatted) error output."""
    msgs = re.findall(r'msg="((?:[^"\\]|\\.)*)"', stderr)
    detail = (msgs[-1] if msgs else stderr.strip().splitlines()[-1] if stderr.strip() else "skopeo failed")
    detail = detail.replace('\\"', '"')
    for pattern, sentence in _CAUSES:
        if pattern.search(detail):
            return sentence.format(host=r.host, detail=detail[-160:])
    return " ".join(detail.split())[:300]


def pull(store, ref: str, access: Access = Access(), log: Callable[[str], None] = lambda s: None):
    """Copy ``ref`` from its registry into the store (validated load); returns the ImageRecord."""
    from core.scratch import scratch_dir
    from runtime.image.transfer import load

    r = parse_ref(ref)
    auth = access.auth_args()
    log(f"pulling {r.remote}")
    with scratch_dir(store.paths, "pull") as tmp:
        archive = Path(tmp) / "image.tar"
        _skopeo(["copy", "--quiet", *auth, f"--src-tls-verify={str(access.verify(r)).lower()}",
                 "--override-os", "linux", "--override-arch", "amd64",
                 f"docker://{r.remote}", f"oci-archive:{archive}:{r.local_name}"], r, "pull")
        recs = load(store, archive)
    return recs[0]


def push(store, name: str, ref: str, access: Access = Access()) -> str:
    """Copy image ``name`` to ``ref`` with its digest unchanged; returns that digest."""
    from core.scratch import scratch_dir
    from runtime.image.transfer import save

    r = parse_ref(ref)
    auth = access.auth_args()
    rec = store.resolve(name)
    with scratch_dir(store.paths, "push") as tmp:
        archive = Path(tmp) / "image.tar"
        save(store, rec, archive)
        _skopeo(["copy", "--quiet", "--preserve-digests", *auth,
                 f"--dest-tls-verify={str(access.verify(r)).lower()}",
                 f"oci-archive:{archive}", f"docker://{r.remote}"], r, "push")
    return rec.manifest_digest
