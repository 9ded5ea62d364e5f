"""Naming rules: S3 URIs, member-name safety, -tiny variants, cache entry names."""

import pytest

from blocktrain.data.names import (
    UnsafeNameError,
    entry_name,
    is_hidden,
    normalize_source,
    parse_s3,
    safe_member_name,
    split_suffix,
    tiny_variant,
)
from blocktrain.errors import BlocktrainError


def test_s3_uris():
    assert parse_s3("s3://bucket/a/b").bucket == "bucket"
    assert parse_s3("s3://bucket/a/b").key == "a/b"
    assert parse_s3("s3://bucket").key == ""
    assert parse_s3("s3://bucket/a").child("x/y.png").uri == "s3://bucket/a/x/y.png"
    with pytest.raises(BlocktrainError, match="names no bucket"):
        parse_s3("s3:///key")
    assert normalize_source("s3://bucket/a/b/") == "s3://bucket/a/b"
    assert normalize_source("s3://bucket/") == "s3://bucket"


def test_local_sources_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_source("data/x") == str(tmp_path / "data" / "x")


@pytest.mark.parametrize(
    ("name", "clean"),
    [("a/b.png", "a/b.png"), ("./a//b.png", "a/b.png"), ("a/./b", "a/b"), ("x", "x")],
)
def test_safe_names(name, clean):
    assert safe_member_name(name, "src.zip") == clean


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("../evil", r"contains '\.\.'"),
        ("a/../../evil", r"contains '\.\.'"),
        ("a/..", r"contains '\.\.'"),
        ("C:/x", "absolute"),
        ("a\\b", "absolute or Windows"),
        ("./", "names nothing"),
    ],
)
def test_unsafe_names_are_refused_naming_the_source(name, why):
    with pytest.raises(UnsafeNameError, match=rf"^src\.zip: member .*{why}"):
        safe_member_name(name, "src.zip")


def test_hidden_members():
    assert is_hidden(".DS_Store")
    assert is_hidden("a/.b/c.png")
    assert is_hidden("__MACOSX/a.png")
    assert is_hidden("cat/.001.png.1a2b3c4d.tmp")
    assert not is_hidden("cat/001.png")


def test_tiny_variants():
    assert tiny_variant("s3://b/datasets/mnist") == "s3://b/datasets/mnist-tiny"
    assert tiny_variant("s3://b/datasets/mnist.zip") == "s3://b/datasets/mnist-tiny.zip"
    assert tiny_variant("/data/mnist.tar.gz") == "/data/mnist-tiny.tar.gz"
    assert tiny_variant("/data/mnist-tiny.tar.gz") is None
    assert split_suffix("x.TGZ") == ("x", ".TGZ")


def test_entry_names_are_readable_and_distinct():
    assert entry_name("s3://datasets/mnist") == "mnist-293aca64eb17"
    assert entry_name("s3://other/mnist") != entry_name("s3://datasets/mnist")
    assert entry_name("/data/my data!.zip").startswith("my_data_.zip-")
