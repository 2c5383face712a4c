"""What `load` trusts of a build folder: only files inside it that the manifest lists as artifacts
with a matching sha256. A manifest that points a driver at any other file (outside the folder, not
an artifact, or with no artifacts at all) is a LoaderError naming the field, before anything is opened."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import coverage_specs, require_spirv_tools

from compiler import runtime
from compiler.runtime.manifest import artifact_path, sha256_of, shader_path
from compiler.specs import make_spec


@pytest.fixture(scope="module")
def build_dir(build_library):
    return build_library("x86", coverage_specs())


def tampered(build_dir, tmp_path, change) -> Path:
    """A copy of the build in tmp_path/lib whose manifest.json is what `change` returns, or the
    manifest it changed in place."""
    copy = tmp_path / "lib"
    shutil.copytree(build_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest = change(manifest) or manifest
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.native
def test_library_outside_the_folder_is_refused(build_dir, tmp_path):
    shutil.copy(build_dir / "kernels.so", tmp_path / "evil.so")
    copy = tampered(build_dir, tmp_path, lambda m: m.update(library="../evil.so"))
    with pytest.raises(runtime.LoaderError, match=r"'library' names '\.\./evil\.so', which is not one of its artifacts"):
        runtime.load(copy)


@pytest.mark.native
def test_library_outside_the_folder_is_refused_even_as_an_artifact(build_dir, tmp_path):
    shutil.copy(build_dir / "kernels.so", tmp_path / "evil.so")
    digest = sha256_of(tmp_path / "evil.so")

    def point_outside(manifest):
        manifest.update(library="../evil.so", artifacts={**manifest["artifacts"], "../evil.so": digest})

    with pytest.raises(runtime.LoaderError, match=r"artifact name '\.\./evil\.so' must be a relative path"):
        runtime.load(tampered(build_dir, tmp_path, point_outside))


@pytest.mark.native
def test_absolute_library_path_is_refused(build_dir, tmp_path):
    shutil.copy(build_dir / "kernels.so", tmp_path / "evil.so")
    evil = str(tmp_path / "evil.so")
    with pytest.raises(runtime.LoaderError, match="'library' names .*evil.so'?, which is not one of its artifacts"):
        runtime.load(tampered(build_dir, tmp_path, lambda m: m.update(library=evil)))
    digest = sha256_of(tmp_path / "evil.so")
    copy = tampered(build_dir, tmp_path / "again", lambda m: m.update(library=evil, artifacts={evil: digest}))
    with pytest.raises(runtime.LoaderError, match="artifact name .*evil.so'? must be a relative path"):
        runtime.load(copy)


@pytest.mark.native
def test_artifact_symlinked_out_of_the_folder_is_refused(build_dir, tmp_path):
    shutil.copy(build_dir / "kernels.so", tmp_path / "evil.so")
    copy = tampered(build_dir, tmp_path, lambda m: None)
    (copy / "kernels.so").unlink()
    (copy / "kernels.so").symlink_to(tmp_path / "evil.so")
    with pytest.raises(runtime.LoaderError, match="artifact 'kernels.so' resolves to .*, outside the build folder"):
        runtime.load(copy)


@pytest.mark.native
@pytest.mark.parametrize("artifacts", [{}, [], None, "kernels.so"])
def test_empty_or_malformed_artifacts_are_refused(build_dir, tmp_path, artifacts):
    copy = tampered(build_dir, tmp_path, lambda m: m.update(artifacts=artifacts))
    with pytest.raises(runtime.LoaderError, match="'artifacts' must map each artifact's file name to its sha256"):
        runtime.load(copy)


@pytest.mark.native
@pytest.mark.parametrize("field", ["artifacts", "kernels", "target"])
def test_a_missing_field_is_refused_by_name(build_dir, tmp_path, field):
    copy = tampered(build_dir, tmp_path, lambda m: {k: v for k, v in m.items() if k != field})
    with pytest.raises(runtime.LoaderError, match=f"lacks '{field}'"):
        runtime.load(copy)


@pytest.mark.native
def test_library_not_among_the_artifacts_is_refused(build_dir, tmp_path):
    def unlisted(manifest):
        shutil.copy(build_dir / "kernels.so", tmp_path / "lib" / "other.so")
        manifest["library"] = "other.so"

    with pytest.raises(runtime.LoaderError, match="'library' names 'other.so', which is not one of its artifacts"):
        runtime.load(tampered(build_dir, tmp_path, unlisted))


@pytest.mark.native
def test_a_json_list_is_refused(build_dir, tmp_path):
    copy = tampered(build_dir, tmp_path, lambda m: [m])
    with pytest.raises(runtime.LoaderError, match="is not a JSON object"):
        runtime.load(copy)


@pytest.mark.native
def test_a_native_build_without_a_library_is_refused(build_dir, tmp_path):
    copy = tampered(build_dir, tmp_path, lambda m: m.update(library=None))
    with pytest.raises(runtime.LoaderError, match="the manifest names no library"):
        runtime.load(copy)


@pytest.mark.native
def test_the_untampered_copy_still_loads(build_dir, tmp_path):
    with runtime.load(tampered(build_dir, tmp_path, lambda m: None)) as library:
        assert library.kernels


@pytest.mark.unit
def test_artifact_path_returns_only_checked_artifacts(tmp_path):
    (tmp_path / "kernels.so").write_bytes(b"x")
    manifest = {"library": "kernels.so", "artifacts": {"kernels.so": "0"}}
    assert artifact_path(tmp_path, manifest, "library") == (tmp_path / "kernels.so").resolve()
    with pytest.raises(runtime.LoaderError, match="names no runner"):
        artifact_path(tmp_path, manifest, "runner")
    with pytest.raises(runtime.LoaderError, match="'other.so' is not one of the manifest's artifacts"):
        artifact_path(tmp_path, {**manifest, "library": "other.so"}, "library")


@pytest.mark.unit
@pytest.mark.parametrize("shader", ["../../evil", "x/../../../evil"])
def test_shader_paths_stay_among_the_artifacts_or_inside_a_candidate_folder(tmp_path, shader):
    manifest = {"artifacts": {"shaders/main_kernel.spv": "0"}}
    assert shader_path(tmp_path, manifest, "main_kernel") == (tmp_path / "shaders/main_kernel.spv").resolve()
    with pytest.raises(runtime.LoaderError, match="is not one of the manifest's artifacts"):
        shader_path(tmp_path, manifest, shader)
    with pytest.raises(runtime.LoaderError, match="must be a relative path inside the build folder"):
        shader_path(tmp_path, {"kernels": {}}, shader)  # a tuning candidate's plan: no artifacts table


@pytest.mark.compile
def test_a_vulkan_launch_of_a_shader_outside_the_artifacts_is_refused(build_library, tmp_path):
    require_spirv_tools()
    build = build_library("vulkan", [make_spec("quantize_per_token", k=100)])
    shutil.copytree(build / "shaders", tmp_path / "shaders")  # a valid shader outside the build folder

    def launch_outside(manifest):
        variant = next(iter(manifest["kernels"].values()))["variants"][0]
        variant["vulkan"]["launches"][0]["shader"] = "../../shaders/" + variant["vulkan"]["launches"][0]["shader"]

    assert runtime.read_manifest(build)["library"] is None
    with pytest.raises(runtime.LoaderError, match=r"'shaders/\.\./\.\./shaders/.*\.spv' is not one of the manifest's artifacts"):
        runtime.load(tampered(build, tmp_path, launch_outside))
