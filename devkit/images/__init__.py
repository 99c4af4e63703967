"""The operator and runner images, built here and cached by content (``make images``).

Every image is built from its Dockerfile in ``images/`` with the base a build argument:

- ``public``: the public ``python:X-slim-bookworm`` / ``node:N-bookworm-slim`` image, on a
  machine whose engine reaches a registry;
- ``debian``: a base made here from Debian's packages (``debootstrap --variant=minbase
  bookworm``, then ``docker import``): Python is bookworm's 3.11 (and trixie's 3.13 for
  runner:3.13); no Debian release ships 3.12, so runner:3.12's Python is
  python-build-standalone's CPython 3.12 (``devkit.toolchain.cpython``: through the Go module
  proxy, pinned) copied into ``/usr/local`` of a bookworm minbase; Node.js is the official
  binary ``devkit.toolchain.node`` fetches from the npm registry and verifies, copied onto a
  minbase root file system.

Python packages never come from an index inside a build (here the build's namespace reaches
none): a wheelhouse is filled outside it (``pip download --require-hashes`` of the lock files
in ``images/requirements/``, per Python version) and the Dockerfiles install from it with
``--no-index --require-hashes``.

An image is rebuilt only when its key changes: the hash of its Dockerfile, every file its
``COPY`` lines name, its lock files, its base's recipe and its build arguments. Each built
image is also saved (``docker save``) to ``<cache>/images/archives/``, which is what a kind or
real node loads; ``archives()`` maps image references to those files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devkit import engine
from devkit.filelock import file_lock
from devkit.toolchain import cache_root

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
LOCKS = IMAGES / "requirements"
SUITE = "bookworm"  # the suite of every base but the Python versions bookworm lacks
DEBIAN_MIRROR = os.environ.get("DOCRELAY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_PYTHON = "3.11"  # bookworm's python3: the operator's Python
# The platforms the wheelhouse is for: bookworm's glibc 2.36 and every older manylinux (pip
# does not widen an explicit --platform itself).
WHEEL_PLATFORMS = [
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64",
]


def _pip_target(python: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for platform in WHEEL_PLATFORMS:
        args += ["--platform", platform]
    return args
BASES = ("auto", "public", "debian")


class ImageError(RuntimeError):
    """An image could not be built; the message says what to do."""


def say(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def images_cache() -> Path:
    return cache_root() / "images"


def image_repo() -> str:
    return os.environ.get("IMAGE_REPO") or "ghcr.io/docrelay"


def image_tag() -> str:
    return os.environ.get("IMAGE_TAG") or "0.1.0"


def runner_pythons() -> list[str]:
    return (os.environ.get("RUNNER_PYTHONS") or "3.11 3.12 3.13").split()


def runner_nodes() -> list[str]:
    return (os.environ.get("RUNNER_NODES") or "20 22 24 26").split()


# --- hashing -------------------------------------------------------------------------------


def _walk(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith((".pyc", ".pyo")):
                yield Path(root) / name


def _digest(parts: Iterable[bytes | str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths a Dockerfile's ``COPY`` lines (not ``--from``) name."""
    sources: list[str] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources += args[:-1]
    return sources


# --- base images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DebianBase:
    """A base image made from Debian's packages: debootstrap, then docker import."""

    name: str  # e.g. python-3.11
    packages: tuple[str, ...]
    node_major: str | None = None  # copy the official Node.js binary of this major line
    suite: str = SUITE
    # copy python-build-standalone's CPython of this minor version (devkit.toolchain.cpython)
    standalone_python: str | None = None

    @property
    def ref(self) -> str:
        return f"docrelay-base/{self.name}:{self.suite}-{self.key[:12]}"

    @property
    def rootfs_key(self) -> str:
        return _digest(["debootstrap", "minbase", self.suite, *self.packages])[:16]

    @property
    def key(self) -> str:
        parts = [self.rootfs_key]
        if self.node_major:
            from devkit.toolchain import node

            parts += ["node", node.pin(self.node_major).version]
        if self.standalone_python:
            from devkit.toolchain import cpython

            pinned = cpython.pin(self.standalone_python)
            parts += ["cpython", pinned.module_version, pinned.zip_sha256,
                      _digest([ENSUREPIP_STANDIN.read_bytes(),
                               lock_file("ensurepip", self.standalone_python).read_bytes()])]
        return _digest(parts)

    def rootfs_tar(self) -> Path:
        return images_cache() / "rootfs" / f"{self.suite}-minbase-{self.rootfs_key}.tar"


PYTHON_PACKAGES = ("python3", "python3-venv", "python-is-python3")
# Each Python a Debian release ships as its python3: bookworm 3.11, trixie 3.13. None ships
# 3.12: its base is a bookworm minbase with python-build-standalone's CPython in /usr/local.
PYTHON_BASES = {
    "3.11": DebianBase("python-3.11", PYTHON_PACKAGES),
    "3.12": DebianBase("python-3.12", (), standalone_python="3.12"),
    "3.13": DebianBase("python-3.13", PYTHON_PACKAGES, suite="trixie"),
}
# The ensurepip of the 3.12 base (its CPython comes without one; `python -m venv` needs it).
ENSUREPIP_STANDIN = Path(__file__).with_name("ensurepip_standin.py")
PYTHON_BASE = PYTHON_BASES[DEBIAN_PYTHON]


# What the official Node.js binary needs beyond a minbase: from Node.js 26 it links libatomic
# (`readelf -d bin/node`: NEEDED libatomic.so.1), as the public node images provide. Every
# line's base gets it, so all four share one root file system.
NODE_PACKAGES = ("libatomic1",)


def node_base(major: str) -> DebianBase:
    return DebianBase(f"node-{major}", NODE_PACKAGES, node_major=major)


def public_node_base(major: str) -> str:
    return f"node:{major}-bookworm-slim"


def operator_node() -> str:
    """The Node.js line the operator image carries for the agent's `node --check`: the newest
    pinned one (its parser accepts what the older lines' do)."""
    from devkit.toolchain import node

    return max(node.majors(), key=int)


def debootstrap(base: DebianBase) -> Path:
    """A tar of the base's root file system, made once per recipe (about a minute)."""
    tar = base.rootfs_tar()
    if tar.exists():
        return tar
    if not shutil.which("debootstrap"):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            say("installing debootstrap (apt-get) ...")
            subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True)
        else:
            raise ImageError("debootstrap is missing: apt-get install debootstrap")
    tar.parent.mkdir(parents=True, exist_ok=True)
    debs = images_cache() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    what = ",".join(base.packages) or "nothing more"
    say(f"debootstrap --variant=minbase {base.suite} (+ {what}) from {DEBIAN_MIRROR} ...")
    with tempfile.TemporaryDirectory(dir=tar.parent, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        log = Path(tmp) / "debootstrap.log"
        command = ["debootstrap", "--variant=minbase", f"--cache-dir={debs}"]
        if base.packages:
            command.append("--include=" + ",".join(base.packages))
        command += [base.suite, str(root), DEBIAN_MIRROR]
        # In a mount namespace of its own: the /proc and /sys debootstrap mounts in the new
        # root vanish with it, even when it fails half way.
        with open(log, "wb") as out:
            done = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "--", *command],
                stdout=out, stderr=subprocess.STDOUT,
            )
        if done.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise ImageError("debootstrap failed:\n" + "\n".join(tail))
        # Nothing a container needs: apt's downloaded lists and packages, docs, man pages.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                     "usr/share/man", "usr/share/info", "var/log"):
            target = root / junk
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        partial = tar.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
            check=True,
        )
        partial.rename(tar)
        shutil.rmtree(root, ignore_errors=True)
    say(f"root file system ready in {time.monotonic() - started:.0f} s: {tar.name} "
        f"({tar.stat().st_size // 2**20} MiB)")
    return tar


def _standalone_python_base(base: DebianBase) -> str:
    """A bookworm minbase with python-build-standalone's CPython in /usr/local (where the
    public python images keep theirs), and an ensurepip for ``python -m venv``."""
    from devkit.toolchain import cpython

    assert base.standalone_python is not None
    minor = base.standalone_python
    tree = cpython.ensure(minor, log=say)
    pip = wheelhouse([lock_file("ensurepip", minor)], minor)
    minbase = ensure_debian_base(DebianBase("minbase", ()))
    with tempfile.TemporaryDirectory(prefix=f"python-{minor}-base-",
                                     dir=images_cache()) as tmp:
        root = Path(tmp) / "python"
        shutil.copytree(tree, root, symlinks=True)
        ensurepip = root / "lib" / f"python{minor}" / "ensurepip"
        (ensurepip / "_bundled").mkdir(parents=True)
        shutil.copy2(ENSUREPIP_STANDIN, ensurepip / "__init__.py")
        (ensurepip / "__main__.py").write_text(
            "import sys\n\nimport ensurepip\n\nsys.exit(ensurepip._main())\n")
        for wheel in pip.glob("pip-*.whl"):
            shutil.copy2(wheel, ensurepip / "_bundled" / wheel.name)
        for path in [ensurepip, *ensurepip.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {minbase}\n"
            "COPY python/ /usr/local/\n"
            "ENV LANG=C.UTF-8\n"
            'CMD ["python3"]\n'
        )
        say(f"making {base.ref}: Debian minbase + CPython {cpython.pin(minor).version} "
            f"(python-build-standalone {cpython.pin(minor).release})")
        engine.docker("build", "-q", "-t", base.ref, tmp, capture=True)
    return base.ref


def _image_id(ref: str) -> str | None:
    done = engine.docker("image", "inspect", "--format", "{{.Id}}", ref, check=False,
                         capture=True)
    return done.stdout.decode().strip() if done.returncode == 0 else None


def ensure_debian_base(base: DebianBase) -> str:
    """The base's image reference in the engine, imported (and debootstrapped) when missing."""
    if _image_id(base.ref):
        return base.ref
    if base.standalone_python:
        return _standalone_python_base(base)
    if base.node_major:
        from devkit.toolchain import node

        node_dir = node.ensure_node(base.node_major, log=say)
        minbase = ensure_debian_base(DebianBase("minbase", base.packages))
        with tempfile.TemporaryDirectory(prefix="node-base-") as tmp:
            shutil.copy2(node_dir / "bin" / "node", Path(tmp) / "node")
            for extra in ("LICENSE",):
                if (node_dir / extra).exists():
                    shutil.copy2(node_dir / extra, Path(tmp) / "LICENSE.node")
            (Path(tmp) / "Dockerfile").write_text(
                f"FROM {minbase}\n"
                "COPY node /usr/local/bin/node\n"
                "COPY LICENSE.node /usr/local/share/doc/node/LICENSE\n"
                # A library the binary needs and the base lacks fails here, not in a run.
                'RUN ["/usr/local/bin/node", "--version"]\n'
                'CMD ["node"]\n'
            )
            say(f"making {base.ref}: Debian minbase (+ {', '.join(base.packages)}) + the "
                f"official Node.js {node.pin(base.node_major).version} binary")
            engine.docker("build", "-q", "-t", base.ref, tmp, capture=True)
        return base.ref
    tar = debootstrap(base)
    say(f"docker import {tar.name} as {base.ref}")
    with open(tar, "rb") as data:
        done = subprocess.run(
            [shutil.which("docker") or "docker", "import",
             "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", "ENV LANG=C.UTF-8",
             "--change", 'CMD ["bash"]',
             "-", base.ref],
            stdin=data, env=engine.docker_env(), capture_output=True,
        )
    if done.returncode != 0:
        raise ImageError(f"docker import failed: {done.stderr.decode().strip()}")
    return base.ref


# --- wheelhouse ----------------------------------------------------------------------------


def lock_file(name: str, python: str) -> Path:
    return LOCKS / f"{name}-{python}.txt"


def wheelhouse(locks: list[Path], python: str) -> Path:
    """Wheels for the lock files, downloaded (hashes checked) outside any build, cached."""
    key = _digest([python, *WHEEL_PLATFORMS, *(p.read_bytes() for p in locks)])[:16]
    target = images_cache() / "wheelhouse" / f"py{python}-{key}"
    if (target / ".complete").exists():
        return target
    missing = [str(p.relative_to(REPO)) for p in locks if not p.exists()]
    if missing:
        raise ImageError(f"no lock file {', '.join(missing)}: python -m devkit.images lock")
    say(f"wheelhouse for Python {python}: pip download --require-hashes "
        f"({', '.join(p.name for p in locks)}) ...")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for lock in locks:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--require-hashes", *_pip_target(python),
             "-d", str(tmp), "-r", str(lock)],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise ImageError(f"pip download of {lock.name} failed:\n{done.stderr.strip()[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (target / ".complete").write_text("")
    return target


# --- the images ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    name: str  # operator, runner-3.11, runner-node-20
    ref: str
    dockerfile: Path
    base_arg: str  # the Dockerfile's ARG naming its base
    public_base: str
    debian_base: DebianBase | None  # None: no Debian-made base offers this version
    unavailable: str = ""  # why no Debian base can be made
    python: str | None = None  # wheelhouse Python version
    locks: tuple[str, ...] = field(default_factory=tuple)  # lock names (images/requirements)
    # The Node.js line whose runner base the Dockerfile's NODE_IMAGE stage copies `node` from
    # (the operator image: the agent's `node --check`).
    node_major: str | None = None

    def lock_paths(self) -> list[Path]:
        assert self.python is not None
        return [lock_file(name, self.python) for name in self.locks]

    def archive(self) -> Path:
        return images_cache() / "archives" / f"{self.name}.tar"

    def record(self) -> Path:
        return images_cache() / "built" / f"{self.name}.json"

    def key(self, base: str) -> str:
        parts: list[bytes | str] = [self.ref, self.base_arg, base, self.dockerfile.read_bytes()]
        if base == "debian":
            assert self.debian_base is not None
            parts.append(self.debian_base.key)
        if self.node_major:
            parts += ["NODE_IMAGE", node_base(self.node_major).key if base == "debian"
                      else public_node_base(self.node_major)]
        for source in copy_sources(self.dockerfile):
            if source.rstrip("/") == "wheelhouse":
                continue
            for path in _walk(REPO / source):
                parts += [str(path.relative_to(REPO)), path.read_bytes()]
        if self.python:
            parts += [p.read_bytes() for p in self.lock_paths()]
        return _digest(parts)


def all_images() -> list[Image]:
    repo, tag = image_repo(), image_tag()
    images = [
        Image(
            "operator", f"{repo}/docrelay:{tag}", IMAGES / "Dockerfile.operator",
            "PYTHON_IMAGE", f"python:{DEBIAN_PYTHON}-slim-bookworm", PYTHON_BASE,
            python=DEBIAN_PYTHON, locks=("operator", "build"), node_major=operator_node(),
        )
    ]
    for python in runner_pythons():
        images.append(Image(
            f"runner-{python}", f"{repo}/runner:{python}", IMAGES / "Dockerfile.runner",
            "PYTHON_IMAGE", f"python:{python}-slim-bookworm",
            PYTHON_BASES.get(python),
            unavailable=f"no Debian release ships Python {python} as its python3 "
                        f"(bases here: {', '.join(PYTHON_BASES)})",
            python=python, locks=("runner",),
        ))
    from devkit.toolchain import node

    for major in runner_nodes():
        offered = major in node.majors()
        images.append(Image(
            f"runner-node-{major}", f"{repo}/runner-node:{major}",
            IMAGES / "Dockerfile.runner-node", "NODE_IMAGE", public_node_base(major),
            node_base(major) if offered else None,
            unavailable=f"devkit.toolchain.node pins no Node.js {major}",
        ))
    return images


def select(only: Iterable[str] | None) -> list[Image]:
    images = all_images()
    if not only:
        return images
    wanted = set(only)
    unknown = wanted - {i.name for i in images}
    if unknown:
        names = ", ".join(i.name for i in images)
        raise ImageError(f"no image named {', '.join(sorted(unknown))} (images: {names})")
    return [i for i in images if i.name in wanted]


def _read_record(image: Image) -> dict[str, str]:
    try:
        data = json.loads(image.record().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _can_pull(ref: str) -> bool:
    if _image_id(ref):
        return True
    done = engine.docker("pull", "-q", ref, check=False, capture=True)
    return done.returncode == 0


def choose_base(images: list[Image], base: str) -> str:
    """``auto``: ``public`` when the engine has or can pull the public Python image."""
    if base != "auto":
        return base
    env = os.environ.get("DOCRELAY_IMAGE_BASE")
    if env in ("public", "debian"):
        return env
    known = all_images()
    if any(_read_record(i).get("base") == "public" for i in known):
        return "public"
    if any(_read_record(i).get("base") == "debian" for i in known):
        return "debian"
    probe = f"python:{DEBIAN_PYTHON}-slim-bookworm"
    chosen = "public" if _can_pull(probe) else "debian"
    say(f"base images: {chosen} ({probe} {'is' if chosen == 'public' else 'is not'} "
        "reachable from the engine)")
    return chosen


def _context(image: Image, base_ref: str, tmp: Path) -> Path:
    """A build context holding what the Dockerfile copies, and the wheelhouse."""
    for source in copy_sources(image.dockerfile):
        if source.rstrip("/") == "wheelhouse":
            continue
        for path in _walk(REPO / source):
            target = tmp / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    if image.python:
        house = wheelhouse(image.lock_paths(), image.python)
        (tmp / "wheelhouse").mkdir()
        for wheel in house.glob("*.whl"):
            os.link(wheel, tmp / "wheelhouse" / wheel.name)
        for lock in image.lock_paths():
            # operator-3.11.txt -> wheelhouse/operator.txt, the name the Dockerfile reads
            shutil.copy2(lock, tmp / "wheelhouse" / (lock.name.rsplit("-", 1)[0] + ".txt"))
    return tmp


def build_one(image: Image, base: str) -> Path:
    key = image.key(base)
    record = _read_record(image)
    if record.get("key") == key and image.archive().exists():
        say(f"{image.ref}: cached ({image.archive()})")
        return image.archive()
    started = time.monotonic()
    if base == "debian":
        assert image.debian_base is not None
        base_ref = ensure_debian_base(image.debian_base)
    else:
        base_ref = image.public_base
        if not _can_pull(base_ref):
            raise ImageError(
                f"{image.ref}: the engine cannot pull {base_ref} (no registry reachable?); "
                "build on bases made from Debian's packages with --base debian "
                "(make images IMAGE_BASE=debian)")
    build_args = [f"{image.base_arg}={base_ref}"]
    if image.node_major:
        node_ref = (ensure_debian_base(node_base(image.node_major)) if base == "debian"
                    else public_node_base(image.node_major))
        if base != "debian" and not _can_pull(node_ref):
            raise ImageError(f"{image.ref}: the engine cannot pull {node_ref}; build with "
                             "--base debian (make images IMAGE_BASE=debian)")
        build_args.append(f"NODE_IMAGE={node_ref}")
    say(f"{image.ref}: building from {image.dockerfile.relative_to(REPO)} on {base_ref} ...")
    with tempfile.TemporaryDirectory(prefix=f"context-{image.name}-",
                                     dir=images_cache()) as tmp:
        context = _context(image, base_ref, Path(tmp))
        log = images_cache() / "logs" / f"{image.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            done = subprocess.run(
                [shutil.which("docker") or "docker", "build", "--force-rm",
                 "-f", str(image.dockerfile),
                 *(arg for value in build_args for arg in ("--build-arg", value)),
                 "--label", f"io.docrelay.build-key={key}", "-t", image.ref, str(context)],
                env=engine.docker_env(), stdout=out, stderr=subprocess.STDOUT,
            )
        if done.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-25:]
            raise ImageError(f"docker build of {image.ref} failed (full log {log}):\n"
                             + "\n".join(tail))
    # The images this one replaces and the untagged build stages (every build of a changed
    # operator/ would otherwise leave about 800 MB behind in the engine).
    for label in ("io.docrelay.build-key", "io.docrelay.stage=build"):
        engine.docker("image", "prune", "--force", "--filter", f"label={label}",
                      check=False, capture=True)
    archive = image.archive()
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    engine.docker("save", "-o", str(partial), image.ref)
    partial.rename(archive)
    image.record().parent.mkdir(parents=True, exist_ok=True)
    image.record().write_text(json.dumps({
        "ref": image.ref, "key": key, "base": base, "base_ref": base_ref,
        "image_id": _image_id(image.ref) or "", "archive": str(archive),
    }, indent=2) + "\n")
    size = archive.stat().st_size / 2**20
    say(f"{image.ref}: built in {time.monotonic() - started:.0f} s, saved {archive} "
        f"({size:.0f} MiB)")
    return archive


@dataclass
class Result:
    built: dict[str, Path] = field(default_factory=dict)  # ref -> archive
    skipped: dict[str, str] = field(default_factory=dict)  # ref -> why


def build(only: Iterable[str] | None = None, base: str = "auto") -> Result:
    """Build (or find cached) the selected images; an image no base here offers is skipped."""
    if base not in BASES:
        raise ImageError(f"base must be one of {', '.join(BASES)}")
    with file_lock(images_cache() / "build.lock"):
        return _build(select(only), base)


def _build(images: list[Image], base: str) -> Result:
    result = Result()
    # A warm run touches no engine: every key matches a saved archive.
    if base == "auto":
        cached = [i for i in images if (r := _read_record(i)).get("base")
                  and r.get("key") == i.key(r["base"]) and i.archive().exists()]
        if len(cached) == len(images):
            for image in images:
                say(f"{image.ref}: cached ({image.archive()})")
                result.built[image.ref] = image.archive()
            return result
    chosen = choose_base(images, base)
    for image in images:
        if chosen == "debian" and image.debian_base is None:
            result.skipped[image.ref] = f"no base from Debian's packages: {image.unavailable}"
            say(f"{image.ref}: skipped ({result.skipped[image.ref]})")
            continue
        result.built[image.ref] = build_one(image, chosen)
    return result


def archives() -> dict[str, Path]:
    """Image reference -> saved archive, for every image whose archive matches its inputs."""
    found: dict[str, Path] = {}
    for image in all_images():
        record = _read_record(image)
        if (record.get("base") and record.get("key") == image.key(record["base"])
                and image.archive().exists()):
            found[image.ref] = image.archive()
    return found


def ensure_loaded(ref: str) -> None:
    """Load an image's archive into the engine when the engine lacks it."""
    if _image_id(ref):
        return
    archive = archives().get(ref)
    if archive is None:
        raise ImageError(f"{ref} is not built: python -m devkit.images build")
    engine.docker("load", "-q", "-i", str(archive), capture=True)


# --- lock files ----------------------------------------------------------------------------


def _requirements(name: str) -> list[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    if name == "operator":
        return list(project["project"]["dependencies"])
    if name == "build":
        return list(project["build-system"]["requires"])
    return [line.split("#")[0].strip() for line in (LOCKS / f"{name}.in").read_text().splitlines()
            if line.split("#")[0].strip()]


def _installed_pins() -> list[str]:
    """The versions this checkout's tests run with, as constraints for the lock."""
    done = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                          capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if "==" in line]


def lock(names: Iterable[str], pythons: Iterable[str]) -> list[Path]:
    """Resolve and pin (with sha256 of each wheel) each lock for each Python version."""
    written = []
    constraints = _installed_pins()
    for name in names:
        for python in pythons:
            if name != "runner" and python != DEBIAN_PYTHON:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                cfile = Path(tmp) / "constraints.txt"
                cfile.write_text("\n".join(constraints) + "\n")
                say(f"resolving {name} for Python {python} ...")
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--quiet",
                     "--disable-pip-version-check", *_pip_target(python),
                     "-c", str(cfile), "-d", f"{tmp}/w",
                     *_requirements(name)],
                    check=True,
                )
                lines = [
                    f"# {name} for Python {python}: python -m devkit.images lock",
                    "# (versions as this checkout's .venv has them; sha256 of each wheel)",
                ]
                for wheel in sorted(Path(tmp, "w").glob("*.whl"), key=lambda p: p.name.lower()):
                    dist, version = wheel.name.split("-")[:2]
                    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
                    canonical = re.sub(r"[-_.]+", "-", dist).lower()
                    lines.append(f"{canonical}=={version} --hash=sha256:{sha}")
                target = lock_file(name, python)
                target.write_text("\n".join(lines) + "\n")
                written.append(target)
    return written
