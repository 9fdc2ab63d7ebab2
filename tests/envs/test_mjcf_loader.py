"""The safe MJCF loader: one test per rule, plus the models it must still load unchanged."""

import os
import re
import struct

import mujoco
import numpy as np
import pytest

import envs.mjcf_loader as loader
from envs import ENV_SPECS, make_env
from envs.mjcf_loader import ASSET_ROOT, MjcfLimits, check_model_size, load_mjcf, load_mjcf_spec

BODY = '<body><freejoint/><geom size=".1"/></body>'
TET = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


def _mjcf(inner: str = "", world: str = BODY) -> str:
    return f"<mujoco>{inner}<worldbody>{world}</worldbody></mujoco>"


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


def _refused(rule: str, *fragments: str):
    """``pytest.raises`` for a refusal by ``rule`` whose message holds every fragment."""
    ahead = "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    pattern = rf"^{ahead}MJCF .* refused by rule '{rule}': "
    return pytest.raises(ValueError, match=pattern)


@pytest.fixture
def scene(tmp_path):
    """A root folder with a scene that includes a part and a mesh from subfolders."""
    root = tmp_path / "assets"
    _write(root / "parts" / "arm.xml", _mjcf(world=BODY))
    _write(root / "meshes" / "tet.obj", TET)
    main = _write(root / "scene.xml", _mjcf(
        '<include file="parts/arm.xml"/><compiler meshdir="meshes"/>'
        '<asset><mesh name="tet" file="tet.obj"/></asset>',
        world='<geom type="mesh" mesh="tet"/>'))
    return root, main


# -- what must still load ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(p.name for p in ASSET_ROOT.glob("*.xml")))
def test_shipped_assets_compile_exactly_as_mujoco_compiles_them(name):
    ours, theirs = load_mjcf(ASSET_ROOT / name), mujoco.MjModel.from_xml_path(str(ASSET_ROOT / name))
    for field in ("nbody", "ngeom", "nq", "nu", "narena", "nbuffer"):
        assert getattr(ours, field) == getattr(theirs, field), field
    for field in ("geom_size", "geom_pos", "body_mass", "qpos0", "actuator_ctrlrange", "tex_data"):
        assert np.array_equal(getattr(ours, field), getattr(theirs, field)), field


def test_includes_and_meshes_inside_the_root_load(scene):
    root, main = scene
    model = load_mjcf(main)
    assert (model.nbody, model.nmesh, model.ngeom) == (2, 1, 2)
    # The same scene given as a string resolves its files against root; MjSpec sees them too.
    assert load_mjcf(main.read_text(), root=root).nmesh == 1
    assert load_mjcf_spec(main).compile().nbody == 2


def test_every_registered_task_loads_its_model_through_the_loader(monkeypatch):
    checked = []
    original = loader._check

    def spy(source, root, limits):
        checked.append(os.fspath(source))
        return original(source, root, limits)

    monkeypatch.setattr(loader, "_check", spy)
    for env_id in sorted(ENV_SPECS):
        before = len(checked)
        make_env(env_id)
        new = checked[before:]
        assert new and all(os.path.dirname(p) == str(ASSET_ROOT) for p in new), (env_id, new)


# -- paths ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("inner, what", [
    ('<include file="/etc/passwd"/>', "file '/etc/passwd' of <include>"),
    ('<asset><mesh name="m" file="/tmp/m.stl"/></asset>', "file '/tmp/m.stl' of <mesh>"),
    ('<asset><texture name="t" type="cube" fileright="C:/x.png"/></asset>',
     "fileright 'C:/x.png' of <texture>"),
    ('<asset><hfield name="h" file="//server/share/h.png"/></asset>',
     "file '//server/share/h.png' of <hfield>"),
    ('<compiler meshdir="/usr/share"/>', "meshdir '/usr/share' of <compiler>"),
])
def test_absolute_paths_are_refused(tmp_path, inner, what):
    with _refused("relative_path", what, "is absolute"):
        load_mjcf(_write(tmp_path / "m.xml", _mjcf(inner)))


def test_url_paths_are_refused(tmp_path):
    with _refused("relative_path", "names a scheme"):
        load_mjcf(_write(tmp_path / "m.xml", _mjcf('<include file="http:evil.xml"/>')))


@pytest.mark.parametrize("inner, what", [
    ('<include file="../secret.xml"/>', "file '../secret.xml' of <include>"),
    ('<include file="parts/../../secret.xml"/>', "file 'parts/../../secret.xml' of <include>"),
    ('<asset><mesh name="m" file="../m.obj"/></asset>', "file '../m.obj' of <mesh>"),
    ('<asset><texture name="t" type="2d" file="a/../../t.png"/></asset>', "of <texture>"),
    ('<compiler texturedir="../textures"/>', "texturedir '../textures' of <compiler>"),
    ('<compiler assetdir=".."/>', "assetdir '..' of <compiler>"),
])
def test_dotdot_paths_are_refused_naming_the_root(tmp_path, inner, what):
    main = _write(tmp_path / "root" / "m.xml", _mjcf(inner))
    with _refused("inside_root", what, "has '..'", str(tmp_path / "root")):
        load_mjcf(main)


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    _write(tmp_path / "outside" / "secret.xml", _mjcf())
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    main = _write(root / "m.xml", _mjcf('<include file="link/secret.xml"/>'))
    with _refused("inside_root", "resolves to", str(tmp_path / "outside" / "secret.xml")):
        load_mjcf(main)


def test_a_file_outside_an_explicit_root_is_refused(tmp_path):
    main = _write(tmp_path / "elsewhere" / "m.xml", _mjcf())
    (tmp_path / "root").mkdir()
    with _refused("inside_root", str(main), "outside the root"):
        load_mjcf(main, root=tmp_path / "root")


def test_a_bad_path_in_an_included_file_names_that_file(scene):
    root, main = scene
    _write(root / "parts" / "arm.xml", _mjcf('<include file="../../x.xml"/>'))
    with _refused("inside_root", "file '../../x.xml' of <include>"):
        load_mjcf(main)
    with pytest.raises(ValueError, match=re.escape(f"MJCF {root / 'parts' / 'arm.xml'} refused")):
        load_mjcf(main)


# -- file size, declarations, encoding ----------------------------------------------------------
def test_a_file_over_the_byte_cap_is_refused_before_reading(tmp_path, monkeypatch):
    main = _write(tmp_path / "m.xml", _mjcf(world=BODY * 50))
    size = main.stat().st_size

    def no_read(self):
        raise AssertionError("read a file over the cap")

    monkeypatch.setattr(type(main), "read_bytes", no_read)
    with _refused("max_bytes", str(main), f"has {size} bytes; expected at most 100"):
        load_mjcf(main, limits=MjcfLimits(max_bytes=100))


def test_an_included_or_mesh_file_over_the_byte_cap_is_refused(scene):
    root, main = scene
    _write(root / "meshes" / "tet.obj", TET + "# padding\n" * 1000)
    with _refused("max_bytes", str(root / "meshes" / "tet.obj")):
        load_mjcf(main, limits=MjcfLimits(max_bytes=5000))


def test_an_xml_string_over_the_byte_cap_is_refused():
    with _refused("max_bytes", "<xml string>"):
        load_mjcf(_mjcf(world=BODY * 50), limits=MjcfLimits(max_bytes=100))


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE mujoco [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<mujoco model="&d;"><worldbody/></mujoco>"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, '<!doctype mujoco><mujoco/>',
                                  '<mujoco><!ENTITY x "y"><worldbody/></mujoco>'])
def test_doctype_and_entity_declarations_are_refused(tmp_path, text):
    with _refused("no_doctype", "DOCTYPE or ENTITY"):
        load_mjcf(text if text.startswith("<mujoco") else _write(tmp_path / "m.xml", text))


def test_a_declaration_in_an_included_file_is_refused(scene):
    root, main = scene
    _write(root / "parts" / "arm.xml", BILLION_LAUGHS)
    with _refused("no_doctype", str(root / "parts" / "arm.xml")):
        load_mjcf(main)


def test_non_utf8_and_malformed_xml_are_refused(tmp_path):
    with _refused("utf8", "not UTF-8"):
        load_mjcf(_write(tmp_path / "a.xml", _mjcf().encode("utf-16")))
    with _refused("xml_syntax", "does not parse"):
        load_mjcf(_write(tmp_path / "b.xml", "<mujoco><worldbody></mujoco>"))
    with _refused("xml_syntax", "root element is <html>"):
        load_mjcf("<html/>")


# -- model size, before compiling ----------------------------------------------------------------
@pytest.mark.parametrize("count", [10**9, 10**5])
def test_a_huge_replicate_is_refused_before_compiling(count):
    xml = _mjcf(world=f'<replicate count="{count}" offset="1 0 0">{BODY}</replicate>')
    with _refused("max_elements", "expected at most 200000"):
        load_mjcf(xml)


def test_nested_replicates_multiply():
    inner = f'<replicate count="20" offset="1 0 0">{BODY}</replicate>'
    xml = _mjcf(world=f'<replicate count="20" offset="0 1 0">{inner}</replicate>')
    # 20 x 20 bodies + the world = 401; as many free joints = 7 x 400 position coordinates.
    with _refused("max_bodies", "~401 bodies; expected at most 400"):
        load_mjcf(xml, limits=MjcfLimits(max_bodies=400))
    with _refused("max_nq", "~2800 position coordinates"):
        load_mjcf(xml, limits=MjcfLimits(max_nq=2799))
    with _refused("max_geoms", "~400 geoms"):
        load_mjcf(xml, limits=MjcfLimits(max_geoms=399))
    assert load_mjcf(xml).nbody == 401


def test_bodies_in_included_files_are_counted(scene):
    root, main = scene
    _write(root / "parts" / "arm.xml", _mjcf(world=BODY * 30))
    with _refused("max_bodies", "~31 bodies"):  # 30 included + the world
        load_mjcf(main, limits=MjcfLimits(max_bodies=30))


@pytest.mark.parametrize("inner, estimate", [
    ('<size memory="100G"/>', 100 * 2**30),
    ('<size memory="2000000000"/>', 2_000_000_000),
    ('<size nuserdata="1000000000"/>', 8 * 10**9),
    ('<asset><texture name="t" type="2d" builtin="checker" width="60000" height="60000"/></asset>',
     4 * 60000**2),
    ('<asset><texture name="t" type="skybox" builtin="gradient" width="20000" height="20000"/></asset>',
     4 * 6 * 20000**2),
    ('<asset><hfield name="h" nrow="50000" ncol="50000" size="1 1 1 1"/></asset>', 4 * 50000**2),
])
def test_memory_bombs_are_refused_before_compiling(inner, estimate):
    with _refused("max_memory", f"~{estimate} bytes; expected at most {2**30}"):
        load_mjcf(_mjcf(inner))


def test_a_png_declaring_a_huge_image_is_refused(tmp_path):
    # A valid PNG signature and IHDR chunk claiming 100000 x 100000 pixels, in 33 bytes.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 6, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"
    _write(tmp_path / "big.png", png)
    main = _write(tmp_path / "m.xml", _mjcf('<asset><texture name="t" type="2d" file="big.png"/></asset>'))
    with _refused("max_memory", f"~{4 * 10**10} bytes"):
        load_mjcf(main)


def test_elements_nested_beyond_the_recursion_limit_are_refused():
    xml = _mjcf(world="<body>" * 5000 + "</body>" * 5000)
    with _refused("xml_depth", "nests elements too deeply"):
        load_mjcf(xml)


def test_the_includers_mesh_directory_holds_in_included_files(scene):
    root, main = scene
    _write(root / "parts" / "arm.xml", _mjcf('<asset><mesh name="tet2" file="tet.obj"/></asset>'))
    assert load_mjcf(main).nmesh == 2


def test_a_self_include_is_refused_by_depth(tmp_path):
    main = _write(tmp_path / "loop.xml", _mjcf('<include file="loop.xml"/>'))
    with _refused("max_include_depth", "nests deeper than 8 includes"):
        load_mjcf(main)


def test_too_many_referenced_files_are_refused(tmp_path):
    for i in range(5):
        _write(tmp_path / f"m{i}.obj", TET)
    meshes = "".join(f'<mesh name="m{i}" file="m{i}.obj"/>' for i in range(5))
    main = _write(tmp_path / "m.xml", _mjcf(f"<asset>{meshes}</asset>"))
    with _refused("max_files", "more than 4 files"):
        load_mjcf(main, limits=MjcfLimits(max_files=4))


# -- model size, after compiling -----------------------------------------------------------------
def test_the_compiled_model_is_checked_exactly():
    # A default class turns every joint free: the XML estimate (1 per joint) is low, MuJoCo's 21 not.
    xml = _mjcf('<default><joint type="free"/></default>',
                world='<body><joint/><geom size=".1"/></body>' * 3)
    with _refused("max_nq", "the compiled model has 21; expected at most 10"):
        load_mjcf(xml, limits=MjcfLimits(max_nq=10))
    with _refused("max_memory", "the compiled model has"):
        check_model_size(load_mjcf(xml), MjcfLimits(max_memory=2**20), "arena")


@pytest.mark.parametrize("field, value", [("max_bytes", 0), ("max_bodies", -1), ("max_nq", 2.5),
                                          ("max_memory", True)])
def test_limits_are_validated(field, value):
    with pytest.raises(ValueError, match=rf"^MjcfLimits.{field} is {value!r}; expected an integer >= 1$"):
        MjcfLimits(**{field: value})
