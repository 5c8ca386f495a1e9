"""The Dockerfile builder: stages of instructions turned into cached layers and an image in the store.

Each filesystem-changing instruction (COPY, ADD, RUN, a WORKDIR that creates its directory) becomes
one reproducible layer; the others only change the image config. Every step has a *chain key*:
sha256(previous key + instruction text after substitution + content hash of COPY/ADD sources),
starting from the base image's manifest digest. A layer step whose key is in ``paths.build_cache``
(and whose blob is still in the store) is reused without running anything, which is what makes an
unchanged rebuild take well under a second. Nothing is tagged until the last step succeeded, so a
failed build leaves the image index unchanged.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import posixpath
import re
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from core.errors import BuildError, ImageError, IsobenchError
from runtime.image import dockerfile as D
from runtime.image import layers as L
from core.scratch import make_scratch, remove_scratch, scratch_dir
from runtime.image.store import FIXED_CREATED, ImageRecord, ImageStore, LayerRef, write_state_json, check_name

DEFAULT_SHELL = ("/bin/sh", "-c")
_CACHE_VERSION = "isobench-build-cache-v1"


@dataclass(frozen=True)
class BuildOptions:
    context_dir: Path
    dockerfile: Path
    tag: str
    build_args: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    authfile: str | None = None       # registry credentials for FROM host/name (None: the usual files)
    tls_verify: bool | None = None    # None: verify except for loopback registries


@dataclass
class _Stage:
    """Mutable state of one stage while its instructions are applied."""

    name: str | None
    layers: list[LayerRef]
    config: dict                     # the OCI "config" object (Env, Cmd, ...)
    history: list[dict]
    chain: str
    args: dict[str, str]
    shell: tuple[str, ...] = DEFAULT_SHELL
    cmd_set_here: bool = False

    def subst_env(self) -> dict[str, str]:
        env = dict(self.args)
        for kv in self.config.get("Env") or []:
            k, _, v = kv.partition("=")
            env[k] = v
        return env

    def record(self) -> ImageRecord:
        return ImageRecord("(build)", "", "", {}, tuple(self.layers))


# --------------------------------------------------------------------------- .dockerignore

class IgnoreRules:
    """``.dockerignore`` patterns (Go filepath.Match plus ``**`` and ``!`` exceptions, last match wins)."""

    def __init__(self, patterns: list[str]):
        self.rules: list[tuple[bool, re.Pattern]] = []
        for raw in patterns:
            p = raw.strip()
            if not p or p.startswith("#"):
                continue
            negate = p.startswith("!")
            p = posixpath.normpath(p[1:].strip() if negate else p).lstrip("/")
            self.rules.append((negate, re.compile(_glob_regex(p))))

    @classmethod
    def load(cls, context: Path) -> "IgnoreRules":
        try:
            return cls((context / ".dockerignore").read_text().splitlines())
        except FileNotFoundError:
            return cls([])

    def ignored(self, rel: str) -> bool:
        """``rel`` (context-relative) or one of its parent dirs is excluded."""
        if not self.rules or rel in ("", "."):
            return False
        parts = rel.split("/")
        result = False
        for negate, rx in self.rules:
            for i in range(1, len(parts) + 1):
                if rx.fullmatch("/".join(parts[:i])):
                    result = not negate
                    break
        return result


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                out[-1] = "(?:.*/)?"
                i += 1
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i)
            if j < 0:
                out.append(re.escape(c))
            else:
                out.append("[" + pattern[i + 1:j].replace("!", "^", 1) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------- a view over layer dirs

class LayerView:
    """Read-only lookups in the union of unpacked layers (top wins, whiteouts and opaque dirs honoured)."""

    def __init__(self, dirs: list[Path]):
        self.top_first = list(reversed(dirs))

    def find(self, rel: str) -> Path | None:
        rel = rel.strip("/")
        if not rel:
            return self.top_first[0] if self.top_first else None
        parts = rel.split("/")
        for d in self.top_first:
            p = d / rel
            try:
                st = os.lstat(p)
            except OSError:
                st = None
            if st is not None:
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return None
                return p
            # stop at a whiteout or opaque ancestor in this layer
            for i in range(len(parts) - 1, 0, -1):
                anc = d.joinpath(*parts[:i])
                try:
                    ast = os.lstat(anc)
                except OSError:
                    continue
                if stat.S_ISCHR(ast.st_mode) and ast.st_rdev == 0:
                    return None
                if stat.S_ISDIR(ast.st_mode) and L._is_opaque(str(anc)):
                    return None
                break
        return None

    def resolve(self, rel: str, *, follow_last: bool = False) -> str:
        """``rel`` with symlinks in its directory part (and the last component when ``follow_last``)
        resolved inside the image, like secure_join."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while parts:
            comp = parts.pop(0)
            if comp == "..":
                if resolved:
                    resolved.pop()
                continue
            cand = self.find("/".join(resolved + [comp]))
            if (parts or follow_last) and cand is not None and cand.is_symlink():
                hops += 1
                if hops > 40:
                    raise BuildError(f"too many symlinks resolving /{rel} in the image")
                link = os.readlink(cand)
                if link.startswith("/"):
                    resolved = []
                parts = [p for p in link.split("/") if p not in ("", ".")] + parts
                continue
            resolved.append(comp)
        return "/".join(resolved)

    def is_dir(self, rel: str) -> bool:
        p = self.find(self.resolve(rel))
        if p is not None and p.is_symlink():
            target = os.readlink(p)
            base = posixpath.dirname(self.resolve(rel))
            p = self.find(self.resolve(target if target.startswith("/") else posixpath.join(base, target)))
        return p is not None and p.is_dir()


# --------------------------------------------------------------------------- the build

class Builder:
    def __init__(self, store: ImageStore, opts: BuildOptions, log: Callable[[str], None]):
        self.store = store
        self.paths = store.paths
        self.opts = opts
        self.log = log
        self.context = opts.context_dir
        self.ignore = IgnoreRules([])
        self.df: D.Dockerfile | None = None
        self.stages: list[_Stage] = []
        self.stage_names: dict[str, int] = {}
        self.global_args: dict[str, str] = {}
        self.step = 0
        self.total = 0
        self._flat_cache: dict[tuple[LayerRef, ...], Path] = {}
        self._tmp_dirs: list[Path] = []

    # ------------------------------------------------------------------ driver
    def run(self) -> ImageRecord:
        tag = _wrap_image_error(lambda: check_name(self.opts.tag), f"-t {self.opts.tag}")
        if not self.context.is_dir():
            raise BuildError(f"build context {self.context} is not a directory")
        self.df = D.parse_file(self.opts.dockerfile)
        self.ignore = IgnoreRules.load(self.context)
        self.total = len(self.df.instructions)
        try:
            for ins in self.df.instructions:
                self.step += 1
                self.log(f"Step {self.step}/{self.total} : {ins.original}")
                self._dispatch(ins)
            stage = self.stages[-1]
            config = {"architecture": "amd64", "os": "linux", "created": FIXED_CREATED,
                      "config": stage.config, "history": stage.history}
            rec = self.store.commit(tag, config, stage.layers)
        finally:
            for d in self._tmp_dirs:
                remove_scratch(d)
        self.log(f"Successfully built {rec.short_id}")
        self.log(f"Successfully tagged {rec.name}")
        return rec

    def _where(self, ins: D.Instruction) -> str:
        assert self.df is not None
        return ins.where(self.df.path)

    def _base_image(self, ref: str) -> ImageRecord:
        """A FROM image: in the store (or a built-in base), else pulled when ``ref`` names its
        registry (``FROM localhost:5000/app:1``), as docker build does; Docker Hub short names are
        not pulled implicitly (this project sends no traffic off the machine unasked)."""
        from runtime.image import registry

        try:
            return self.store.resolve(ref)
        except ImageError:
            if not registry.names_registry(ref):
                raise
        self.log(f"FROM {ref}: not here, pulling it")
        return registry.pull(self.store, ref, registry.Access(self.opts.authfile, self.opts.tls_verify),
                             log=self.log)

    def _fail(self, ins: D.Instruction, msg: str) -> BuildError:
        return BuildError(f"{self._where(ins)}: {msg}")

    def _dispatch(self, ins: D.Instruction) -> None:
        handler = {
            "FROM": self._from, "ARG": self._arg, "ENV": self._env, "LABEL": self._label,
            "MAINTAINER": self._maintainer, "USER": self._user, "WORKDIR": self._workdir,
            "EXPOSE": self._expose, "VOLUME": self._volume, "CMD": self._cmd, "ENTRYPOINT": self._entrypoint,
            "SHELL": self._shell, "STOPSIGNAL": self._stopsignal, "RUN": self._run,
            "COPY": self._copy, "ADD": self._add,
        }[ins.keyword]
        try:
            handler(ins)
        except D.SubstitutionError as exc:
            raise self._fail(ins, str(exc)) from exc
        except ImageError as exc:
            raise self._fail(ins, str(exc)) from exc

    @property
    def cur(self) -> _Stage:
        return self.stages[-1]

    def _words(self, ins: D.Instruction) -> list[str]:
        assert self.df is not None
        env = self.cur.subst_env()
        if ins.json_args is not None:
            return [D.expand(a, env, self.df.escape) for a in ins.json_args]
        return D.split_words(ins.args, env, self.df.escape)

    def _advance(self, text: str, extra: str = "") -> str:
        self.cur.chain = _chain_key(self.cur.chain, text, extra)
        return self.cur.chain

    def _meta(self, ins: D.Instruction, text: str) -> None:
        """Config-only step: advance the chain, add an empty-layer history entry."""
        self._advance(text)
        self.cur.history.append({"created": FIXED_CREATED, "created_by": text, "empty_layer": True})
        self.log(f" ---> {self.cur.chain.split(':')[1][:12]}")

    # ------------------------------------------------------------------ FROM / ARG
    def _from(self, ins: D.Instruction) -> None:
        assert self.df is not None
        words = ins.args.split()
        platform = ins.flags.get("platform")
        if platform and D.expand(platform, self.global_args, self.df.escape) not in ("linux/amd64", "linux/x86_64"):
            raise self._fail(ins, f"FROM --platform={platform}: only linux/amd64 images can be built here")
        ref = D.expand(words[0], self.global_args, self.df.escape)
        alias = words[2].lower() if len(words) == 3 else None
        if alias and alias in self.stage_names:
            raise self._fail(ins, f"duplicate stage name {alias!r}")
        src_idx = self.stage_names.get(ref.lower())
        if src_idx is not None:
            src = self.stages[src_idx]
            stage = _Stage(alias, list(src.layers), copy.deepcopy(src.config), copy.deepcopy(src.history),
                           _chain_key(src.chain, "FROM stage"), {}, src.shell)
        else:
            if not ref:
                raise self._fail(ins, f"FROM {words[0]!r} expands to an empty image name")
            try:
                base = self._base_image(ref)
            except IsobenchError as exc:
                if str(exc).startswith("unknown image"):
                    raise self._fail(ins, f"unknown base image {ref!r} (built-in bases: busybox, debian:bookworm, "
                                          "scratch; others: isobench image ls; registry images name their "
                                          "registry, e.g. localhost:5000/app:1)") from exc
                raise self._fail(ins, f"base image {ref!r}: {exc}") from exc
            cfg = copy.deepcopy(base.config)
            stage = _Stage(alias, list(base.layers), cfg.get("config") or {}, cfg.get("history") or [],
                           _chain_key("", "FROM " + base.manifest_digest), {})
        self.stages.append(stage)
        if alias:
            self.stage_names[alias] = len(self.stages) - 1
        self.log(f" ---> {stage.chain.split(':')[1][:12]}")

    def _arg(self, ins: D.Instruction) -> None:
        assert self.df is not None
        name, eq, default = ins.args.strip().partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise self._fail(ins, f"invalid ARG name {name!r}")
        in_stage = bool(self.stages)
        env = self.cur.subst_env() if in_stage else dict(self.global_args)
        if name in self.opts.build_args:
            value: str | None = self.opts.build_args[name]
        elif eq:
            value = D.expand(default, env, self.df.escape)
        elif in_stage and name in self.global_args:
            value = self.global_args[name]  # re-declared global ARG: inherits its value
        else:
            value = None
        if not in_stage:
            if value is not None:
                self.global_args[name] = value
            return
        if value is not None:
            self.cur.args[name] = value
        self._meta(ins, f"ARG {name}={value}" if value is not None else f"ARG {name}")

    # ------------------------------------------------------------------ config-only instructions
    def _env(self, ins: D.Instruction) -> None:
        assert self.df is not None
        pairs = D.parse_kv_pairs(ins.args, self.cur.subst_env(), self.df.escape, "ENV")
        env = list(self.cur.config.get("Env") or [])
        for k, v in pairs:
            env = [e for e in env if e.partition("=")[0] != k] + [f"{k}={v}"]
        self.cur.config["Env"] = env
        self._meta(ins, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))

    def _label(self, ins: D.Instruction) -> None:
        assert self.df is not None
        pairs = D.parse_kv_pairs(ins.args, self.cur.subst_env(), self.df.escape, "LABEL")
        labels = dict(self.cur.config.get("Labels") or {})
        labels.update(pairs)
        self.cur.config["Labels"] = labels
        self._meta(ins, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))

    def _maintainer(self, ins: D.Instruction) -> None:
        labels = dict(self.cur.config.get("Labels") or {})
        labels["maintainer"] = ins.args
        self.cur.config["Labels"] = labels
        self._meta(ins, f"MAINTAINER {ins.args}")

    def _user(self, ins: D.Instruction) -> None:
        words = self._words(ins)
        if len(words) != 1:
            raise self._fail(ins, f"USER takes one user[:group], got {ins.args!r}")
        self.cur.config["User"] = words[0]
        self._meta(ins, f"USER {words[0]}")

    def _expose(self, ins: D.Instruction) -> None:
        ports = dict(self.cur.config.get("ExposedPorts") or {})
        for w in self._words(ins):
            ports[D.parse_port(w)] = {}
        self.cur.config["ExposedPorts"] = ports
        self._meta(ins, "EXPOSE " + " ".join(sorted(ports)))

    def _volume(self, ins: D.Instruction) -> None:
        vols = dict(self.cur.config.get("Volumes") or {})
        words = self._words(ins)
        for w in words:
            if not w.startswith("/"):
                raise self._fail(ins, f"VOLUME {w!r} must be an absolute path")
            vols[posixpath.normpath(w)] = {}
        self.cur.config["Volumes"] = vols
        self._meta(ins, "VOLUME " + " ".join(words))

    def _command(self, ins: D.Instruction) -> list[str]:
        if ins.json_args is not None:
            return list(ins.json_args)
        return list(self.cur.shell) + [ins.args]

    def _cmd(self, ins: D.Instruction) -> None:
        self.cur.config["Cmd"] = self._command(ins)
        self.cur.cmd_set_here = True
        self._meta(ins, f"CMD {json.dumps(self.cur.config['Cmd'])}")

    def _entrypoint(self, ins: D.Instruction) -> None:
        self.cur.config["Entrypoint"] = self._command(ins)
        if not self.cur.cmd_set_here:
            self.cur.config.pop("Cmd", None)  # as Docker: a new ENTRYPOINT drops the base image's CMD
        self._meta(ins, f"ENTRYPOINT {json.dumps(self.cur.config['Entrypoint'])}")

    def _shell(self, ins: D.Instruction) -> None:
        assert ins.json_args is not None
        if not ins.json_args:
            raise self._fail(ins, "SHELL needs at least the shell executable")
        self.cur.shell = tuple(ins.json_args)
        self._meta(ins, f"SHELL {json.dumps(list(ins.json_args))}")

    def _stopsignal(self, ins: D.Instruction) -> None:
        words = self._words(ins)
        self.cur.config["StopSignal"] = words[0]
        self._meta(ins, f"STOPSIGNAL {words[0]}")

    # ------------------------------------------------------------------ layer steps
    def _cached(self, key: str) -> tuple[bool, LayerRef | None]:
        if self.opts.no_cache:
            return False, None
        path = self.paths.build_cache / (key.split(":", 1)[1] + ".json")
        try:
            entry = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return False, None
        layer = entry.get("layer")
        if layer is None:
            return True, None
        ref = LayerRef(layer["digest"], layer["diff_id"], int(layer["size_bytes"]))
        if not self.store.has_blob(ref.digest):
            return False, None
        return True, ref

    def _remember(self, key: str, layer: LayerRef | None) -> None:
        body = {"version": _CACHE_VERSION, "layer": None if layer is None else
                {"digest": layer.digest, "diff_id": layer.diff_id, "size_bytes": layer.size_bytes}}
        write_state_json(self.paths.build_cache / (key.split(":", 1)[1] + ".json"), body)

    def _layer_step(self, text: str, extra: str, make: Callable[[], LayerRef | None]) -> None:
        key = self._advance(text, extra)
        hit, layer = self._cached(key)
        if hit:
            self.log(" ---> Using cache")
        else:
            layer = make()
            self._remember(key, layer)
        if layer is not None:
            self.cur.layers.append(layer)
            self.cur.history.append({"created": FIXED_CREATED, "created_by": text})
        else:
            self.cur.history.append({"created": FIXED_CREATED, "created_by": text, "empty_layer": True})
        self.log(f" ---> {key.split(':')[1][:12]}")

    def _view(self) -> LayerView:
        return LayerView(self.store.layer_dirs(self.cur.record()))

    def _workdir(self, ins: D.Instruction) -> None:
        assert self.df is not None
        raw = D.expand(ins.args, self.cur.subst_env(), self.df.escape)
        wd = posixpath.normpath(posixpath.join(self.cur.config.get("WorkingDir") or "/", raw))
        self.cur.config["WorkingDir"] = wd

        def make() -> LayerRef | None:
            view = self._view()
            if view.is_dir(wd):
                return None
            entries = _parent_entries(view, wd + "/x")
            return self.store.write_layer(_sorted(entries))

        self._layer_step(f"WORKDIR {wd}", "", make)

    def _run(self, ins: D.Instruction) -> None:
        from runtime.image.runstep import run_step

        argv = self._command(ins)
        env = list(self.cur.config.get("Env") or [])
        names = {e.partition("=")[0] for e in env}
        env += [f"{k}={v}" for k, v in sorted(self.cur.args.items()) if k not in names]
        workdir = self.cur.config.get("WorkingDir") or "/"
        user = self.cur.config.get("User") or None
        text = f"RUN {json.dumps(argv)}"

        def make() -> LayerRef:
            lower = self.store.layer_dirs(self.cur.record())
            # leased: after a kill -9 `isobench gc` removes it (core.scratch)
            with scratch_dir(self.paths, "build") as tmp:
                (tmp / "upper").mkdir()
                (tmp / "work").mkdir()
                rc = run_step(self.paths, lower, tmp / "upper", tmp / "work", argv, env, workdir, user,
                              lambda line: self.log(f"  {line}"))
                if rc != 0:
                    raise self._fail(ins, f"RUN {ins.args} failed with exit code {rc}")
                return self.store.write_layer(L.dir_entries(tmp / "upper", overlay_upper=True))

        self._layer_step(text, f"env={json.dumps(env)} user={user} workdir={workdir}", make)

    def _copy(self, ins: D.Instruction) -> None:
        self._copy_or_add(ins, add=False)

    def _add(self, ins: D.Instruction) -> None:
        self._copy_or_add(ins, add=True)

    def _copy_or_add(self, ins: D.Instruction, *, add: bool) -> None:
        assert self.df is not None
        words = self._words(ins)
        srcs, dest = words[:-1], words[-1]
        env = self.cur.subst_env()
        chown = D.expand(ins.flags["chown"], env, self.df.escape) if "chown" in ins.flags else None
        chmod = _parse_chmod(ins.flags.get("chmod"), ins, self)
        from_ref = D.expand(ins.flags["from"], env, self.df.escape) if "from" in ins.flags else None
        for s in srcs:
            if add and (re.match(r"^[a-z][a-z0-9+.-]*://", s, re.I) or s.startswith("git@")):
                raise self._fail(ins, f"ADD from a URL ({s}) is not supported: download it into the build "
                                      "context and ADD/COPY the file")
        dest_abs = posixpath.normpath(posixpath.join(self.cur.config.get("WorkingDir") or "/", dest))
        if from_ref is not None:
            # the source stage's chain key already identifies its content: no flattening on a cache hit
            src_key, from_layers = self._from_key(ins, from_ref)
            content = ""
            root = Path("/nonexistent")
            sources: list[tuple[str, Path]] = []
            ignore = None
        else:
            root, src_key = self.context, ""
            sources = [(s, p) for s in srcs for p in _context_sources(self.context, s, self.ignore, ins, self)]
            ignore = self.ignore
            content = _content_hash([p for _, p in sources], root, ignore)
        globbed = any(_has_glob(s) for s in srcs)
        if (len(srcs) > 1 or globbed or len(sources) > 1) and not dest.endswith("/"):
            raise self._fail(ins, f"{ins.keyword} with more than one source needs a destination directory "
                                  f"ending in '/', got {dest!r}")
        text = f"{ins.keyword} {' '.join(f'--{k}={v}' for k, v in sorted(ins.flags.items()))} " \
               f"{json.dumps(srcs)} {dest_abs}{'/' if dest.endswith('/') else ''}"

        def make() -> LayerRef:
            nonlocal root, sources
            view = self._view()
            owner = _chown(chown, view) if chown else (0, 0)
            if from_ref is not None:
                root = self._flat(from_layers)
                sources = [(s, p) for s in srcs for p in _stage_sources(root, s, ins, self)]
            dest_is_dir = dest.endswith("/") or len(sources) > 1 or view.is_dir(dest_abs)
            entries: dict[str, L.Entry] = {}
            for _, path in sources:
                rel_in_root = os.path.relpath(path, root)
                skip = _make_skip(ignore, rel_in_root) if ignore else None
                if add and path.is_file() and not path.is_symlink() and _is_archive(path):
                    target = view.resolve(dest_abs, follow_last=view.is_dir(dest_abs))
                    for e in _archive_entries(path, target, ins, self):
                        entries[e[0].name] = e
                elif path.is_dir():
                    # COPY dir /lib where /lib -> usr/lib: copy into usr/lib, keep the symlink
                    target = view.resolve(dest_abs, follow_last=view.is_dir(dest_abs))
                    st = path.stat()
                    if target:
                        entries[target] = (L.make_info(target, tarfile.DIRTYPE, chmod or st.st_mode,
                                                       uid=owner[0], gid=owner[1]), None)
                    for info, data in L.dir_entries(path, prefix=target, chown=owner, skip=skip):
                        if chmod is not None:
                            info.mode = chmod
                        entries[info.name] = (info, data)
                else:
                    name = posixpath.join(dest_abs, path.name) if dest_is_dir else dest_abs
                    target = view.resolve(name)
                    st = path.stat()  # top-level symlinks were checked to stay inside and are followed
                    info = L.make_info(target, tarfile.REGTYPE, chmod or st.st_mode, uid=owner[0],
                                       gid=owner[1], size=st.st_size)
                    entries[target] = (info, path.resolve())
            parents: dict[str, L.Entry] = {}
            for name in list(entries):
                for pe in _parent_entries(view, "/" + name):
                    parents.setdefault(pe[0].name, pe)
            for k, v in parents.items():
                entries.setdefault(k, v)
            return self.store.write_layer(_sorted(entries.values()))

        self._layer_step(text, f"sources={content} from={src_key} chown={chown}", make)

    def _from_key(self, ins: D.Instruction, ref: str) -> tuple[str, tuple[LayerRef, ...]]:
        """Cache key and layers of a ``COPY --from`` source: a previous stage (name or index) or an image."""
        idx = self.stage_names.get(ref.lower())
        if idx is None and ref.isdigit() and int(ref) < len(self.stages) - 1:
            idx = int(ref)
        if idx is not None:
            if idx == len(self.stages) - 1:
                raise self._fail(ins, f"COPY --from={ref} refers to the current stage")
            stage = self.stages[idx]
            return stage.chain, tuple(stage.layers)
        try:
            img = self.store.resolve(ref)
        except ImageError as exc:
            raise self._fail(ins, f"COPY --from={ref}: no stage named {ref!r} and no such image") from exc
        return img.manifest_digest, img.layers

    def _flat(self, layers: tuple[LayerRef, ...]) -> Path:
        """A private flattened rootfs of ``layers`` for reading COPY --from sources."""
        if layers not in self._flat_cache:
            tmp = make_scratch(self.paths, "from")
            self._tmp_dirs.append(tmp)
            self.store.flatten(ImageRecord("(stage)", "", "", {}, layers), tmp / "rootfs")
            self._flat_cache[layers] = tmp / "rootfs"
        return self._flat_cache[layers]


# --------------------------------------------------------------------------- helpers

def _wrap_image_error(fn: Callable, what: str):
    try:
        return fn()
    except ImageError as exc:
        raise BuildError(f"{what}: {exc}") from exc


def _chain_key(prev: str, text: str, extra: str = "") -> str:
    h = hashlib.sha256()
    h.update(_CACHE_VERSION.encode() + b"\0" + prev.encode() + b"\0" + text.encode() + b"\0" + extra.encode())
    return "sha256:" + h.hexdigest()


def _sort_key(entry: L.Entry) -> tuple[str, ...]:
    return tuple(entry[0].name.split("/"))  # depth-first order: parents before children


def _sorted(entries: Iterable[L.Entry]) -> list[L.Entry]:
    return sorted(entries, key=_sort_key)


def _parent_entries(view: LayerView, path: str) -> list[L.Entry]:
    """Dir entries for the parents of ``path``, with the attributes they already have in the image (so a
    COPY into /tmp does not reset its 1777 mode) or 0755 root when new."""
    out = []
    parts = [p for p in path.strip("/").split("/") if p][:-1]
    for i in range(1, len(parts) + 1):
        rel = "/".join(parts[:i])
        existing = view.find(rel)
        if existing is not None and existing.is_dir() and not existing.is_symlink():
            st = existing.stat()
            out.append((L.make_info(rel, tarfile.DIRTYPE, st.st_mode, uid=st.st_uid, gid=st.st_gid), None))
        else:
            out.append((L.make_info(rel, tarfile.DIRTYPE, 0o755), None))
    return out


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _context_sources(ctx: Path, src: str, ignore: IgnoreRules, ins: D.Instruction, b: Builder) -> list[Path]:
    if src.startswith("/"):
        raise b._fail(ins, f"{ins.keyword} source {src!r} is outside the build context (absolute path)")
    norm = posixpath.normpath(src)
    if norm == ".." or norm.startswith("../"):
        raise b._fail(ins, f"{ins.keyword} source {src!r} is outside the build context")
    real_ctx = os.path.realpath(ctx)
    if _has_glob(norm):
        matches = sorted(m for m in glob.glob(norm, root_dir=ctx) if not ignore.ignored(posixpath.normpath(m)))
        if not matches:
            raise b._fail(ins, f"{ins.keyword} source {src!r}: no files in the build context match")
        rels = matches
    else:
        rels = [norm]
    out = []
    for rel in rels:
        p = ctx / rel if rel != "." else ctx
        if not os.path.lexists(p) or (rel != "." and ignore.ignored(rel)):
            hint = " (excluded by .dockerignore)" if os.path.lexists(p) else ""
            raise b._fail(ins, f"{ins.keyword} source {rel!r} not found in build context {ctx}{hint}")
        real = os.path.realpath(p)
        if real != real_ctx and not real.startswith(real_ctx + os.sep):
            raise b._fail(ins, f"{ins.keyword} source {rel!r} is a symlink pointing outside the build "
                               f"context ({real})")
        out.append(Path(real) if p.is_symlink() else p)
    return out


def _stage_sources(root: Path, src: str, ins: D.Instruction, b: Builder) -> list[Path]:
    if _has_glob(src):
        rels = sorted(glob.glob(src.lstrip("/"), root_dir=root))
        if not rels:
            raise b._fail(ins, f"{ins.keyword} --from source {src!r}: nothing matches in the stage")
    else:
        rels = [src]
    out = []
    for rel in rels:
        p = L.secure_join(root, rel, follow_last=True)
        if not os.path.lexists(p):
            raise b._fail(ins, f"{ins.keyword} --from source {src!r} not found in the source stage")
        out.append(p)
    return out


def _make_skip(ignore: IgnoreRules, base_rel: str) -> Callable[[str], bool]:
    def skip(rel: str) -> bool:
        full = rel if base_rel in ("", ".") else f"{base_rel}/{rel}"
        return ignore.ignored(posixpath.normpath(full))
    return skip


def _content_hash(paths: list[Path], root: Path, ignore: IgnoreRules | None) -> str:
    """sha256 over names, modes, link targets and file contents of the sources (the COPY cache key)."""
    h = hashlib.sha256()

    def add_file(p: Path, rel: str, st: os.stat_result) -> None:
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{st.st_mode & 0o7777}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(p).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        h.update(b"\1")

    for p in paths:
        st = os.stat(p)
        rel0 = os.path.relpath(p, root)
        add_file(p, rel0, st)
        if stat.S_ISDIR(st.st_mode):
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for n in sorted(dirnames + filenames):
                    full = os.path.join(dirpath, n)
                    rel = os.path.relpath(full, root)
                    if ignore is not None and ignore.ignored(rel):
                        if n in dirnames:
                            dirnames.remove(n)
                        continue
                    add_file(Path(full), rel, os.lstat(full))
    return "sha256:" + h.hexdigest()


def _chown(spec: str, view: LayerView) -> tuple[int, int]:
    from runtime.image.runstep import resolve_user_in

    uid, gid, _ = resolve_user_in(spec, view.find("etc/passwd"), view.find("etc/group"), gid_defaults_to_uid=True)
    return uid, gid


def _parse_chmod(value: str | None, ins: D.Instruction, b: Builder) -> int | None:
    if value is None:
        return None
    if not re.fullmatch(r"[0-7]{3,4}", value):
        raise b._fail(ins, f"--chmod={value}: expected an octal mode like 755")
    return int(value, 8)


def _is_archive(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
        return tarfile.is_tarfile(path)
    try:
        return tarfile.is_tarfile(path) and path.stat().st_size >= 512
    except OSError:
        return False


def _archive_entries(path: Path, dest: str, ins: D.Instruction, b: Builder) -> list[L.Entry]:
    """ADD of a local tar: its members under ``dest``, validated like ``image load``."""
    out: list[L.Entry] = []
    label = f"{b._where(ins)}: ADD {path.name}"
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                rel = L.check_member(m, label, strict=True)
                if not rel:
                    continue
                info = copy.copy(m)
                info.name = posixpath.join(dest, rel).lstrip("/")
                info.uname = info.gname = ""
                if m.islnk():
                    info.linkname = posixpath.join(dest, L.normalize_member_name(m.linkname, label)).lstrip("/")
                data = None
                if m.isreg():
                    f = tf.extractfile(m)
                    data = f.read() if f is not None else b""
                out.append((info, data))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BuildError(f"{label}: cannot read archive ({type(exc).__name__})") from exc
    return out


def build(store: ImageStore, opts: BuildOptions, log: Callable[[str], None] = print) -> ImageRecord:
    """Build ``opts.dockerfile`` in ``opts.context_dir`` and tag the result ``opts.tag``."""
    return Builder(store, opts, log).run()
