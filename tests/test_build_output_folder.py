"""Where a build writes (issue 8): never over a file or into a folder that is not a build of ours, and
a rebuild deletes only what the previous build wrote (its manifest's artifacts), never a user's file."""

from __future__ import annotations

import json

import pytest
from conftest import require_spirv_tools

import targets
from compiler import backends, build, cli, manifest, runtime
from compiler.specs import make_spec

SPEC = make_spec("quantize_per_token", k=37)


def cli_build(capsys, out, tmp_path) -> tuple[int, str]:
    """`python -m compiler build` in this process on a tiny config: (exit code, stderr)."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"hidden": 64, "heads": 2, "kv_heads": 1, "head_dim": 32, "ffn": 64}))
    code = cli.main(["build", "--target", "x86", "--config", str(config), "--ops", "quantize_per_token",
                     "--quant", "w8a8", "--no-tuning", "--out", str(out)])
    return code, capsys.readouterr().err


@pytest.mark.unit
def test_out_at_an_existing_file_is_a_one_line_error(capsys, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, err = cli_build(capsys, target, tmp_path)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and f"{target} is an existing file" in err
    assert target.read_text() == "mine"


@pytest.mark.unit
def test_a_folder_that_is_not_a_build_of_ours_is_refused_and_left_alone(capsys, tmp_path):
    folder = tmp_path / "project"
    (folder / "shaders").mkdir(parents=True)
    (folder / "shaders" / "mine.spv").write_bytes(b"user shader")
    (folder / "README").write_text("mine")
    code, err = cli_build(capsys, folder, tmp_path)
    assert code == 2 and err.count("\n") == 1 and f"{folder} is not empty and holds no build of ours" in err
    with pytest.raises(ValueError, match="holds no build of ours"):  # the check is build.build's: run and tests get it
        build.build([SPEC], targets.get("x86"), folder, toolchain=None, progress=lambda _: None)
    assert sorted(p.name for p in folder.rglob("*")) == ["README", "mine.spv", "shaders"]


@pytest.mark.unit
@pytest.mark.parametrize("content", [b'{"name": "my-app", "version": 3}', b"[1, 2]", b"\xff\xfe not json"])
def test_a_manifest_json_that_is_not_ours_is_refused(tmp_path, content):
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(ValueError, match=r"manifest.json is not the manifest of a build of ours; refusing to write"):
        build.prepare_output(tmp_path)
    assert (tmp_path / "manifest.json").read_bytes() == content


@pytest.mark.unit
def test_new_empty_and_previous_build_folders_are_accepted(tmp_path):
    assert build.prepare_output(tmp_path / "a" / "b") == set() and (tmp_path / "a" / "b").is_dir()
    (tmp_path / "empty").mkdir()
    assert build.prepare_output(tmp_path / "empty") == set()
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "manifest.json").write_text(json.dumps({"schema_version": 2, "target": {}, "kernels": {}, "artifacts": {
        "kernels.so": "0", "shaders/a.spv": "0", "../outside.txt": "0", "/etc/passwd": "0", "manifest.json": "0",
        "shaders/../../x": "0"}}))
    # only names inside the folder (and never the manifest itself) are the previous build's to delete
    assert build.prepare_output(ours) == {"kernels.so", "shaders/a.spv"}


@pytest.mark.unit
def test_a_folder_that_cannot_be_made_is_a_value_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot create the build folder"):
        build.prepare_output(tmp_path / "file" / "out")


@pytest.mark.compile
def test_a_vulkan_rebuild_keeps_user_files_and_deletes_only_its_stale_shaders(tmp_path):
    require_spirv_tools()
    target = targets.get("vulkan")
    out = tmp_path / "out"

    def build_one(spec):
        build.build([spec], target, out, toolchain=backends.toolchain_for(target), progress=lambda _: None)
        return set(json.loads((out / "manifest.json").read_text())["artifacts"])

    first = build_one(SPEC)
    mine = {"shaders/mine.spv": b"user", "shaders/mine.comp": b"user", "shaders/notes.txt": b"user", "notes": b"user"}
    for name, content in mine.items():
        (out / name).write_bytes(content)
    second = build_one(make_spec("quantize_per_token", k=100))
    assert first and second and not first & second
    for name, content in mine.items():
        assert (out / name).read_bytes() == content, f"the rebuild touched {name}, a file it did not write"
    for name in first:  # the previous build's shaders and their GLSL are gone
        assert not (out / name).exists() and not (out / name).with_suffix(".comp").exists()
    for name in second:
        assert (out / name).is_file() and (out / name).with_suffix(".comp").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".shaders-")]  # no staging folder left
    assert set(runtime.read_manifest(out)["artifacts"]) == second
    assert manifest.previous_artifacts(out) == second
