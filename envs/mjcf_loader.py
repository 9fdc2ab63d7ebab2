"""A safe MJCF loader: checks a model's files and size before MuJoCo compiles it.

MuJoCo opens whatever an MJCF names (``<include file>``, mesh / texture / hfield files, the
compiler's ``meshdir``), and allocates whatever it asks for (``<size memory>``, ``<replicate
count>``, a builtin texture's ``width`` x ``height``) before any check of ours could run. So every
model kinodiff compiles goes through :func:`load_mjcf` (or :func:`load_mjcf_spec` for scenes that
are edited with ``MjSpec`` first), which, before MuJoCo sees a byte:

* refuses files over ``max_bytes`` (checked with ``stat``, before reading);
* refuses text that is not UTF-8 or declares a ``<!DOCTYPE`` / ``<!ENTITY`` (the billion-laughs
  vector: MJCF has no use for either), then parses it with ``xml.etree.ElementTree``;
* refuses absolute, drive-, URL- or ``..``-bearing paths in every ``file*`` attribute and in the
  compiler's ``meshdir`` / ``texturedir`` / ``assetdir``, and any path that resolves (symlinks
  followed) outside the asset root;
* estimates the expanded model (``<include>`` inlined, ``<replicate>`` / ``<composite>`` counts
  multiplied) and refuses more bodies, geoms, position coordinates, elements or memory than the
  limits allow;

then compiles from the checked text with every referenced file passed in as an asset, so MuJoCo
reads nothing itself, and checks the compiled sizes exactly. Every refusal is one ``ValueError``
line naming the file and the rule, e.g.
``MJCF /m/scene.xml refused by rule 'inside_root': file '../x.stl' of <mesh> has '..'; expected a
path inside /m``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath

import mujoco

ASSET_ROOT = Path(str(resources.files("sim_assets")))
"""Where kinodiff's own scenes live: the default root for XML given as a string."""

# Compiler attributes that name directories, and the tags whose file is itself MJCF (inlined by
# <include>, attached by <model>): those are parsed and checked like the main file.
_DIR_ATTRS = ("meshdir", "texturedir", "assetdir")
_XML_TAGS = ("include", "model")
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_MEMORY = re.compile(r"^\s*(\d+)\s*([KMGTP]?)\s*$", re.IGNORECASE)
_NQ_PER_JOINT = {"free": 7, "ball": 4}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, kw_only=True)
class MjcfLimits:
    """What a model may ask for; the defaults fit any robot scene and refuse resource bombs."""

    max_bytes: int = 16 * 2**20
    """Largest file (MJCF, include, mesh, texture, hfield), bytes."""
    max_files: int = 256
    """Most files one model may reference, includes and assets together."""
    max_include_depth: int = 8
    """Deepest ``<include>`` nesting."""
    max_elements: int = 200_000
    """Most XML elements once includes are inlined and replicates expanded."""
    max_bodies: int = 10_000
    """Most bodies (``nbody``), estimated before compiling and checked after."""
    max_geoms: int = 50_000
    """Most geoms (``ngeom``), estimated before compiling and checked after."""
    max_nq: int = 50_000
    """Most position coordinates (``nq``), estimated before compiling and checked after."""
    max_memory: int = 2**30
    """Most bytes for the model and its data: ``<size memory>`` plus user data, textures and
    height fields before compiling; ``narena + nbuffer`` after."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MjcfLimits.{name} is {value!r}; expected an integer >= 1")


DEFAULT_LIMITS = MjcfLimits()


def load_mjcf(
    source: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    limits: MjcfLimits = DEFAULT_LIMITS,
) -> mujoco.MjModel:
    """Check an MJCF model and compile it (see the module docstring for the rules).

    Args:
        source: A file path, or the XML itself (a ``str`` starting with ``<``).
        root: The directory every referenced file must stay inside. Defaults to the file's own
            directory, or to ``sim_assets`` for XML given as a string. Relative paths resolve
            against the file's directory (for a string: against ``root``), as MuJoCo resolves them.
        limits: The size caps.

    Returns:
        The compiled model.

    Raises:
        ValueError: When a rule refuses the model, naming the file and the rule.
        FileNotFoundError: When the file or one it references does not exist.
    """
    checked = _check(source, root, limits)
    model = mujoco.MjModel.from_xml_string(checked.text, assets={**checked.includes, **checked.assets})
    check_model_size(model, limits, checked.where)
    return model


def load_mjcf_spec(
    source: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    limits: MjcfLimits = DEFAULT_LIMITS,
) -> mujoco.MjSpec:
    """Check an MJCF model like :func:`load_mjcf` and return it as an editable ``MjSpec``.

    The caller compiles it; :func:`check_model_size` checks the result if the edits can grow it.
    """
    checked = _check(source, root, limits)
    return mujoco.MjSpec.from_string(checked.text, include=checked.includes, assets=checked.assets)


def check_model_size(model: mujoco.MjModel, limits: MjcfLimits, where: str = "model") -> None:
    """Refuse a compiled model larger than ``limits`` (exact counts, after compiling).

    Raises:
        ValueError: Naming ``where``, the rule and the count.
    """
    memory = int(model.narena) + int(model.nbuffer)
    for rule, value, cap in (("max_bodies", model.nbody, limits.max_bodies),
                             ("max_geoms", model.ngeom, limits.max_geoms),
                             ("max_nq", model.nq, limits.max_nq),
                             ("max_memory", memory, limits.max_memory)):
        if int(value) > cap:
            raise _refuse(where, rule, f"the compiled model has {int(value)}; expected at most {cap}")


# -- checks ------------------------------------------------------------------------------------
@dataclass
class _Checked:
    where: str
    text: str
    includes: dict[str, bytes]
    assets: dict[str, bytes]


class _Walk:
    """The state of one check: the root, the limits, the files read so far."""

    def __init__(self, root: Path, base: Path, limits: MjcfLimits) -> None:
        self.root, self.base, self.limits = root, base, limits
        self.includes: dict[str, bytes] = {}  # MJCF files, by the name the XML gives them
        self.assets: dict[str, bytes] = {}  # meshes, textures, ..., by the name MuJoCo looks up
        self.trees: dict[str, ET.Element] = {}  # include name -> parsed root
        self.n_files = 0
        self.texture_bytes = 0  # what the PNG textures decode to, RGBA

    def resolve(self, where: str, path: str, attr: str, tag: str) -> Path:
        """``path`` from ``<tag attr=path>``, resolved; refused unless relative and inside the root."""
        what = f"{attr} {path!r} of <{tag}>"
        for flavour in (PurePosixPath, PureWindowsPath):
            p = flavour(path)
            if p.is_absolute() or p.drive or p.root:
                raise _refuse(where, "relative_path", f"{what} is absolute; expected a "
                              f"path relative to {self.base}")
            if ".." in p.parts:
                raise _refuse(where, "inside_root", f"{what} has '..'; expected a path "
                              f"inside {self.root}")
        if _SCHEME.match(path):
            raise _refuse(where, "relative_path", f"{what} names a scheme; expected a "
                          f"plain relative path")
        full = (self.base / path).resolve()
        if not full.is_relative_to(self.root):
            raise _refuse(where, "inside_root", f"{what} resolves to {full}; expected a "
                          f"path inside {self.root}")
        return full

    def read(self, where: str, path: Path) -> bytes:
        """A file's bytes, refused if it is too large or one too many."""
        self.n_files += 1
        if self.n_files > self.limits.max_files:
            raise _refuse(where, "max_files", f"more than {self.limits.max_files} files are referenced")
        size = path.stat().st_size  # FileNotFoundError names the path
        if size > self.limits.max_bytes:
            raise _refuse(str(path), "max_bytes", f"the file has {size} bytes; expected at most "
                          f"{self.limits.max_bytes}")
        return path.read_bytes()


def _check(source: str | os.PathLike[str], root: str | os.PathLike[str] | None,
           limits: MjcfLimits) -> _Checked:
    if isinstance(source, str) and source.lstrip().startswith("<"):
        where = "<xml string>"
        root_dir = Path(root if root is not None else ASSET_ROOT).resolve()
        walk = _Walk(root_dir, root_dir, limits)
        raw = source.encode("utf-8")
        if len(raw) > limits.max_bytes:
            raise _refuse(where, "max_bytes", f"the XML has {len(raw)} bytes; expected at most "
                          f"{limits.max_bytes}")
    else:
        path = Path(source).resolve()
        where = str(path)
        root_dir = Path(root).resolve() if root is not None else path.parent
        if not root_dir.is_dir():
            raise FileNotFoundError(f"MJCF root {root_dir} is not a directory")
        if not path.is_relative_to(root_dir):
            raise _refuse(where, "inside_root", f"the file is outside the root {root_dir}")
        walk = _Walk(root_dir, path.parent, limits)
        raw = walk.read(where, path)
    tree = _parse(where, raw)
    _check_tree(walk, where, tree, depth=0)
    _check_estimate(walk, where, tree)
    return _Checked(where, raw.decode("utf-8-sig"), walk.includes, walk.assets)


def _parse(where: str, raw: bytes) -> ET.Element:
    if _DECLARATION.search(raw):
        raise _refuse(where, "no_doctype", "the XML declares a DOCTYPE or ENTITY; expected plain MJCF "
                      "(entities can expand without bound)")
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _refuse(where, "utf8", f"the file is not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        tree = ET.fromstring(raw)
    except ET.ParseError as err:
        raise _refuse(where, "xml_syntax", f"the XML does not parse: {err}") from None
    if tree.tag != "mujoco":
        raise _refuse(where, "xml_syntax", f"the root element is <{tree.tag}>; expected <mujoco>")
    return tree


def _check_tree(walk: _Walk, where: str, tree: ET.Element, depth: int,
                dirs: dict[str, str] | None = None) -> None:
    """Check every path in ``tree``, read what they name, recurse into included MJCF."""
    dirs = dict(dirs or dict.fromkeys(_DIR_ATTRS, ""))  # an includer's directories hold here too
    for compiler in tree.iter("compiler"):
        for attr in _DIR_ATTRS:
            if attr in compiler.attrib:
                dirs[attr] = compiler.attrib[attr]
                walk.resolve(where, dirs[attr], attr, "compiler")
    for elem in tree.iter():
        for attr, value in elem.attrib.items():
            if not attr.startswith("file"):
                continue
            what = f"{attr} {value!r} of <{elem.tag}>"
            if elem.tag in _XML_TAGS:
                if depth + 1 > walk.limits.max_include_depth:
                    raise _refuse(where, "max_include_depth", f"{what} nests deeper than "
                                  f"{walk.limits.max_include_depth} includes")
                full = walk.resolve(where, value, attr, elem.tag)
                raw = walk.read(where, full)
                sub = _parse(str(full), raw)
                walk.trees[value] = sub
                walk.includes[value] = raw
                _check_tree(walk, str(full), sub, depth + 1, dirs)
                continue
            # MuJoCo looks an asset file up under its compiler directory: meshdir for meshes,
            # height fields and skins, texturedir for textures, each falling back to assetdir.
            folder = dirs["texturedir" if elem.tag == "texture" else "meshdir"] or dirs["assetdir"]
            walk.resolve(where, value, attr, elem.tag)
            name = str(PurePosixPath(folder) / value) if folder else value
            full = walk.resolve(where, name, attr, elem.tag)
            raw = walk.read(where, full)
            walk.assets[name] = raw
            walk.texture_bytes += 4 * _png_pixels(raw)


def _check_estimate(walk: _Walk, where: str, tree: ET.Element) -> None:
    """Refuse a model whose expanded size, estimated from the XML, is over the limits."""
    try:
        counts = _count(walk, where, tree)
    except RecursionError:
        raise _refuse(where, "xml_depth", "the XML nests elements too deeply to check; expected a "
                      f"depth under Python's recursion limit ({sys.getrecursionlimit()})") from None
    counts["memory"] += walk.texture_bytes
    counts["body"] += 1  # the world (every included <worldbody> merges into the one world)
    lim = walk.limits
    for rule, key, unit, cap in (("max_elements", "elements", "elements", lim.max_elements),
                                 ("max_bodies", "body", "bodies", lim.max_bodies),
                                 ("max_geoms", "geom", "geoms", lim.max_geoms),
                                 ("max_nq", "nq", "position coordinates", lim.max_nq),
                                 ("max_memory", "memory", "bytes", lim.max_memory)):
        if counts[key] > cap:
            raise _refuse(where, rule, f"the expanded model would have ~{counts[key]} {unit}; "
                          f"expected at most {cap}")


def _count(walk: _Walk, where: str, elem: ET.Element) -> Counter:
    """Element, body, geom, nq and memory counts of ``elem``'s subtree, includes inlined."""
    out: Counter = Counter(elements=1)
    tag, attrib = elem.tag, elem.attrib
    if tag == "body":
        out["body"] += 1
    elif tag == "geom":
        out["geom"] += 1
    elif tag in ("joint", "freejoint"):
        out["nq"] += 7 if tag == "freejoint" else _NQ_PER_JOINT.get(attrib.get("type", ""), 1)
    elif tag == "size":
        out["memory"] += _memory_bytes(where, attrib.get("memory", "0"))
        out["memory"] += 8 * _int(where, "nuserdata", attrib.get("nuserdata", "0"))
    elif tag == "texture":
        faces = 6 if attrib.get("type") in ("cube", "skybox") else 1
        width, height = (_int(where, k, attrib.get(k, "0")) for k in ("width", "height"))
        out["memory"] += 4 * faces * width * height
    elif tag == "hfield":
        out["memory"] += 4 * _int(where, "nrow", attrib.get("nrow", "0")) * _int(
            where, "ncol", attrib.get("ncol", "0"))
    elif tag in ("composite", "flexcomp"):
        out["body"] += math.prod(_ints(where, "count", attrib.get("count", "1")))
    if tag in _XML_TAGS and attrib.get("file") in walk.trees:
        children = list(walk.trees[attrib["file"]])
    else:
        children = list(elem)
    inner: Counter = Counter()
    for child in children:
        inner.update(_count(walk, where, child))
        # Bail out early: an over-the-cap count need not be summed to the end.
        if inner["elements"] > walk.limits.max_elements:
            break
    times = _int(where, "count", attrib.get("count", "1")) if tag == "replicate" else 1
    for key, value in inner.items():
        out[key] += times * value
    return out


def _png_pixels(raw: bytes) -> int:
    """Pixels a PNG file declares in its header (a small file can declare a huge image)."""
    if raw[:8] == _PNG_MAGIC and len(raw) >= 24:  # the IHDR chunk: width, height
        return int.from_bytes(raw[16:20], "big") * int.from_bytes(raw[20:24], "big")
    return 0


def _int(where: str, name: str, text: str) -> int:
    values = _ints(where, name, text)
    return values[0] if values else 0


def _ints(where: str, name: str, text: str) -> list[int]:
    try:
        return [max(int(float(v)), 0) for v in text.split()]
    except ValueError:
        raise _refuse(where, "xml_syntax", f"{name}={text!r} is not a number") from None


def _memory_bytes(where: str, text: str) -> int:
    if text.strip() == "-1":
        return 0
    match = _MEMORY.match(text)
    if not match:
        raise _refuse(where, "xml_syntax", f"<size memory={text!r}> is not a byte count "
                      "(an integer with an optional K, M, G, T or P suffix)")
    return int(match[1]) * 1024 ** " KMGTP".index(match[2].upper() or " ")


def _refuse(where: str, rule: str, detail: str) -> ValueError:
    return ValueError(f"MJCF {where} refused by rule {rule!r}: {detail}")
