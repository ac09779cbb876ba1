"""vlm_core.weights: references, safe loading, sha256, safe extraction, the store, resolution
offline and without a network. No test touches the network: sockets are replaced per test."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vlm_core.tasks import WeightsRef
from vlm_core.weights import (
    OFFLINE_FLAGS,
    ChecksumError,
    HubFile,
    UrlFile,
    WeightsError,
    find_in_store,
    import_file,
    list_store,
    load_state_dict,
    locate,
    locations,
    normalize_sha256,
    parse_ref,
    resolve,
    safe_extract,
    sha256_of,
    source_of,
    store_dir,
)
from vlm_core.weights import download as download_mod
from vlm_core.weights.refs import WeightsSource

ZERO_SHA = "0" * 64


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("network disabled in tests")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private VLM_HOME and caches, no offline flags, and no network at all."""
    home = tmp_path / "home"
    monkeypatch.setenv("VLM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name in (*OFFLINE_FLAGS, "HF_ENDPOINT", "VLM_PROBE_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    return home


def _tensors() -> dict[str, torch.Tensor]:
    return {
        "conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "bias": torch.ones(2),
    }


@pytest.fixture
def st_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_file(_tensors(), str(path))
    return path


# ---------------------------------------------------------------------------------------------
# references


@pytest.mark.parametrize(
    ("text", "kind", "target", "path_in_repo", "revision"),
    [
        (
            "https://host.org/w/resnet-1a2b.pth",
            "url",
            "https://host.org/w/resnet-1a2b.pth",
            None,
            None,
        ),
        ("hf-hub:timm/resnet18.a1_in1k", "hf-hub", "timm/resnet18.a1_in1k", None, None),
        (
            "hf-hub:org/repo/sub/w.safetensors@v1.0",
            "hf-hub",
            "org/repo",
            "sub/w.safetensors",
            "v1.0",
        ),
        ("hf-hub:org/repo/w.bin@refs/pr/3", "hf-hub", "org/repo", "w.bin", "refs/pr/3"),
        ("timm:resnet18.a1_in1k", "timm", "resnet18.a1_in1k", None, None),
        (
            "open_clip:ViT-B-32/laion2b_s34b_b79k",
            "open_clip",
            "ViT-B-32/laion2b_s34b_b79k",
            None,
            None,
        ),
        (
            "torchvision:ResNet18_Weights.DEFAULT",
            "torchvision",
            "ResNet18_Weights.DEFAULT",
            None,
            None,
        ),
        ("weights/model.safetensors", "path", "weights/model.safetensors", None, None),
    ],
)
def test_parse_ref_forms(text, kind, target, path_in_repo, revision):
    source = parse_ref(text)
    assert (source.kind, source.target, source.path_in_repo, source.revision) == (
        kind,
        target,
        path_in_repo,
        revision,
    )
    assert parse_ref(source.text) == source


def test_parse_ref_file_url_is_a_path_and_filename_is_known():
    assert parse_ref("file:///data/w%20x.safetensors") == WeightsSource(
        "path", "/data/w x.safetensors"
    )
    assert parse_ref("https://h.org/a/b/rn50-f37072fd.pth?dl=1").filename == "rn50-f37072fd.pth"
    assert parse_ref("hf-hub:org/repo/sub/w.safetensors").filename == "w.safetensors"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timmm:resnet18", "did you mean 'timm'"),
        ("hf-hub:just-a-name", "hf-hub:org/repo"),
        ("hf-hub:org/repo/../secret", "'..' are not allowed"),
        ("ftp://host/w.pth", "only http://, https:// and file://"),
        ("https://host.org/", "does not end in a file name"),
        ("open_clip:ViT-B-32", "open_clip:ARCH/tag"),
        ("torchvision:resnet18", "torchvision:Enum.MEMBER"),
        ("  ", "empty weights reference"),
    ],
)
def test_parse_ref_rejects_malformed_references(text, expected):
    with pytest.raises(WeightsError, match="plugin 'art'") as info:
        parse_ref(text, plugin="art")
    assert expected in str(info.value)


def test_source_of_a_task_weights_ref():
    shipped = WeightsRef(name="tiny", filename="/opt/plugin/tiny.safetensors")
    assert source_of(shipped) == WeightsSource("path", "/opt/plugin/tiny.safetensors")
    hub = WeightsRef(name="r18", filename="sub/model.safetensors", source="hf-hub:org/repo@v2")
    assert source_of(hub) == WeightsSource("hf-hub", "org/repo", "sub/model.safetensors", "v2")
    url = WeightsRef(name="u", filename="x.pth", source="https://h.org/x-00ff.pth")
    assert source_of(url).kind == "url"


def test_normalize_sha256():
    digest = "AB" * 32
    assert normalize_sha256(f"sha256:{digest}") == "ab" * 32
    assert normalize_sha256(None) is None
    with pytest.raises(WeightsError, match="not a sha256"):
        normalize_sha256("abc123")


def test_importing_the_package_and_its_cli_does_not_import_torch():
    code = (
        "import sys, vlm_core.weights, vlm_core.cli.weights_cmd; "
        "heavy = [m for m in ('torch', 'timm', 'safetensors', 'torchvision') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# loading: safetensors first, pickles only through the weights-only unpickler


def test_load_safetensors_and_verify_sha256(st_file):
    digest = sha256_of(st_file)
    state = load_state_dict(st_file, sha256=digest)
    assert set(state) == {"conv.weight", "bias"}
    assert torch.equal(state["conv.weight"], _tensors()["conv.weight"])


def test_wrong_sha256_is_a_clear_error(st_file):
    with pytest.raises(ChecksumError) as info:
        load_state_dict(st_file, sha256=ZERO_SHA, plugin="medical")
    message = str(info.value)
    assert "plugin 'medical'" in message and "tiny.safetensors" in message
    assert f"expected sha256 {ZERO_SHA}" in message
    assert sha256_of(st_file) in message and info.value.found == sha256_of(st_file)


def test_corrupt_safetensors_header_is_a_clear_error(st_file):
    data = bytearray(st_file.read_bytes())
    data[8:16] = b"{{{{{{{{"  # the JSON header right after its 8-byte length
    st_file.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="is not a valid safetensors file") as info:
        load_state_dict(st_file)
    assert "tiny.safetensors" in str(info.value) and "corrupt" in str(info.value)
    huge = st_file.with_name("huge.safetensors")
    huge.write_bytes((2**60).to_bytes(8, "little") + b"{}")  # header length beyond the file
    with pytest.raises(WeightsError, match="is not a valid safetensors file"):
        load_state_dict(huge)


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if safetensors is asked to parse a header."""
    import safetensors.torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("safetensors was asked to parse the header")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)


def _with_header(path: Path, header_bytes: int, data_bytes: int = 0) -> Path:
    """A sparse .safetensors file: an 8-byte length, a header of ``header_bytes`` opening with
    ``{`` (spaces then ``}``: valid JSON), then ``data_bytes`` of data."""
    with open(path, "wb") as fh:
        fh.write(header_bytes.to_bytes(8, "little") + b"{")
        fh.seek(8 + header_bytes - 1)
        fh.write(b"}")
        if data_bytes:
            fh.seek(8 + header_bytes + data_bytes - 1)
            fh.write(b"\0")
    return path


def test_a_45_mb_header_is_refused_before_it_is_parsed(tmp_path, no_parse):
    """The issue's case: a 45 MB header took 25 s and 1.5 GB to reject; now the length is
    checked first (about 0.1 ms) and the header is never read."""
    huge = _with_header(tmp_path / "huge.safetensors", 45 * 10**6, data_bytes=10**6)
    with pytest.raises(WeightsError, match="its header is 45000000 bytes, over the 8388608"):
        load_state_dict(huge)


def test_a_header_length_beyond_the_file_is_refused_before_it_is_parsed(tmp_path, no_parse):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((45 * 10**6).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(WeightsError, match="header length field says 45000000 bytes but only 8"):
        load_state_dict(cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    with pytest.raises(WeightsError, match="it is 2 bytes, too short for a header"):
        load_state_dict(tiny)


def test_a_header_larger_than_its_tensors_is_refused(tmp_path, no_parse):
    """Over 1 MiB of header describing fewer bytes: entries for empty tensors, not weights."""
    hollow = _with_header(tmp_path / "hollow.safetensors", 2 * 2**20, data_bytes=1000)
    with pytest.raises(WeightsError, match=r"header of 2097152 bytes describes only 1000 bytes"):
        load_state_dict(hollow)
    not_json = tmp_path / "not-json.safetensors"
    not_json.write_bytes((4).to_bytes(8, "little") + b"[1] ")
    with pytest.raises(WeightsError, match="its header is not a JSON object"):
        load_state_dict(not_json)


def test_a_big_header_with_its_data_still_loads(tmp_path):
    """1.2 MB of header (a long metadata entry) over 2 MB of tensors: under both caps."""
    path = tmp_path / "big-meta.safetensors"
    save_file({"w": torch.zeros(512, 1024)}, str(path), metadata={"notes": "x" * 1_200_000})
    assert load_state_dict(path)["w"].shape == (512, 1024)


class _WritesMarker:
    """Unpickling this runs code that creates a file: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("form", ["torch.save", "pickle-protocol-2", "pickle-protocol-5"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, form):
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(_WritesMarker(canary)))  # the payload really runs when unpickled
    assert canary.read_text() == "pwned"

    marker = tmp_path / "marker"
    path = tmp_path / ("evil.pt" if form == "torch.save" else "evil.bin")
    if form == "torch.save":
        torch.save({"weight": torch.ones(2), "evil": _WritesMarker(marker)}, path)
    else:  # a plain pickle, as old `.bin` files are
        payload = {"evil": _WritesMarker(marker), "bias": [1.0]}
        path.write_bytes(pickle.dumps(payload, protocol=int(form[-1])))
    with pytest.raises(WeightsError, match="refused to unpickle") as info:
        load_state_dict(path, plugin="caption")
    message = str(info.value)
    assert "plugin 'caption'" in message and path.name in message
    assert "never falls back to unsafe loading" in message
    if form != "pickle-protocol-5":
        assert "'exec'" in message  # names the global the file asked for
    assert not marker.exists()


def test_pickle_checkpoint_with_allow_listed_extras_is_unwrapped(tmp_path):
    path = tmp_path / "train.ckpt"
    state = {f"module.{k}": v for k, v in _tensors().items()}  # saved from DDP
    torch.save(
        {
            "state_dict": state,
            "args": argparse.Namespace(lr=0.1, epochs=3),
            "best_acc": np.float64(0.75),
            "epoch": np.int64(3),
        },
        path,
    )
    loaded = load_state_dict(path, sha256=sha256_of(path))
    assert set(loaded) == {"conv.weight", "bias"}
    assert torch.equal(loaded["bias"], torch.ones(2))
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"state_dict": _tensors()}, "optimizer": {"lr": 0.1}}, nested)
    assert set(load_state_dict(nested)) == {"conv.weight", "bias"}


def test_checkpoint_without_tensors_or_of_unknown_format_is_refused(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"model": "resnet50", "epoch": 3}, path)  # "model" holds no tensors: no unwrap
    with pytest.raises(WeightsError, match="not tensors"):
        load_state_dict(path)
    other = tmp_path / "w.pkl"
    other.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(WeightsError, match=r"unsupported weights format '\.pkl'"):
        load_state_dict(other)
    truncated = tmp_path / "cut.pt"
    torch.save(_tensors(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:64])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_state_dict(truncated)
    with pytest.raises(WeightsError, match="no such file"):
        load_state_dict(tmp_path / "absent.safetensors")
    scripted = tmp_path / "scripted.pt"
    with warnings.catch_warnings():  # torch.jit.script is deprecated in recent torch
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(scripted))
    with pytest.raises(WeightsError, match="it is a TorchScript archive"):
        load_state_dict(scripted)


# ---------------------------------------------------------------------------------------------
# archives


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for info in members:
            data = b"x" * info.size if info.isreg() else None
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 1
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


def test_zip_with_parent_member_is_refused_and_nothing_is_extracted(tmp_path):
    archive = _zip(tmp_path / "w.zip", {"ok/model.safetensors": b"fine", "../evil.txt": b"bad"})
    dest = tmp_path / "out" / "dest"
    with pytest.raises(WeightsError, match=r"member '\.\./evil\.txt' has a '\.\.' path component"):
        safe_extract(archive, dest)
    assert _files_under(dest) == []
    assert not (tmp_path / "out" / "evil.txt").exists()


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (_member("../../evil.txt"), "'..' path component"),
        (_member("a/../../evil.txt"), "'..' path component"),
        (_member("/etc/evil.txt"), "an absolute path"),
        (_member("link", tarfile.SYMTYPE, "../../outside"), "outside the destination"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), "a symlink to the absolute path"),
        (_member("hard", tarfile.LNKTYPE, "../outside"), "a hard link"),
        (_member("dev", tarfile.CHRTYPE), "a device file"),
        (_member("fifo", tarfile.FIFOTYPE), "a device file or FIFO"),
    ],
)
def test_tar_with_unsafe_member_is_refused_and_nothing_is_extracted(tmp_path, member, problem):
    archive = _tar(tmp_path / "w.tar.gz", [_member("good.safetensors"), member], mode="w:gz")
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match="refusing to extract") as info:
        safe_extract(archive, dest)
    assert problem in str(info.value) and "nothing was extracted" in str(info.value)
    assert _files_under(dest) == []
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../etc/passwd")
    with pytest.raises(WeightsError, match="a symlink"):
        safe_extract(archive, tmp_path / "dest")
    assert _files_under(tmp_path / "dest") == []


def test_safe_archives_are_extracted(tmp_path):
    archive = _zip(
        tmp_path / "w.zip", {"bundle/model.safetensors": b"abc", "bundle/cfg.json": b"{}"}
    )
    files = safe_extract(archive, tmp_path / "z")
    assert [f.relative_to(tmp_path / "z").as_posix() for f in files] == [
        "bundle/cfg.json",
        "bundle/model.safetensors",
    ]
    assert (tmp_path / "z" / "bundle" / "model.safetensors").read_bytes() == b"abc"
    members = [_member("m/w.bin", size=4), _member("m/alias", tarfile.SYMTYPE, "w.bin")]
    tar = _tar(tmp_path / "w.tar", members)
    extracted = safe_extract(tar, tmp_path / "t")
    assert extracted == [tmp_path / "t" / "m" / "w.bin"]
    assert (tmp_path / "t" / "m" / "alias").resolve() == (tmp_path / "t" / "m" / "w.bin").resolve()


def test_archive_size_cap_and_unreadable_archives(tmp_path):
    archive = _zip(tmp_path / "big.zip", {"a.bin": b"x" * 100})
    with pytest.raises(WeightsError, match="total size of 100 bytes > 10"):
        safe_extract(archive, tmp_path / "d", max_bytes=10)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not an archive")
    with pytest.raises(WeightsError, match=r"(cannot extract|neither a zip nor a tar)"):
        safe_extract(junk, tmp_path / "d")
    assert _files_under(tmp_path / "d") == []


def _staging_left(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".extract-" in p.name]


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real zip bomb: one member of 200 MB of zeros, deflated to about 200 KB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("readme.txt", b"hello")
        with zf.open("data/zeros.bin", "w", force_zip64=True) as member:
            block = bytes(8 * 2**20)
            for _ in range(25):
                member.write(block)
    return path


def _patch_central_directory(archive: Path, name: str, **fields: int) -> Path:
    """Rewrite the central-directory sizes or CRC of member ``name`` (what zipfile trusts)."""
    with zipfile.ZipFile(archive) as zf:
        at = zf.start_dir
    data = bytearray(archive.read_bytes())
    offsets = {"crc": 16, "compress_size": 20, "file_size": 24}
    while True:  # walk the central directory's records: 46 bytes + name + extra + comment
        assert data[at : at + 4] == b"PK\x01\x02", "no such member"
        name_len, extra_len, comment_len = (
            int.from_bytes(data[at + k : at + k + 2], "little") for k in (28, 30, 32)
        )
        if data[at + 46 : at + 46 + name_len] == name.encode():
            break
        at += 46 + name_len + extra_len + comment_len
    for field, value in fields.items():
        data[at + offsets[field] : at + offsets[field] + 4] = value.to_bytes(4, "little")
    out = archive.with_name(f"patched-{len(list(archive.parent.iterdir()))}.zip")
    out.write_bytes(bytes(data))
    return out


def test_a_200_mb_zip_bomb_is_refused_before_anything_is_written(zip_bomb, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match="refusing to extract") as info:
        safe_extract(zip_bomb, dest)
    message = str(info.value)
    assert "member 'data/zeros.bin'" in message and "decompression bomb" in message
    assert "209715200 bytes" in message and "nothing was extracted" in message
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_a_zip_bomb_under_a_low_total_cap_is_refused_too(zip_bomb, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match=r"total size of 209715205 bytes > 1048576"):
        safe_extract(zip_bomb, dest, max_bytes=2**20, max_ratio=float("inf"))
    assert not dest.exists()


def test_a_bomb_whose_header_understates_the_expansion_is_refused(zip_bomb, tmp_path):
    """compress_size claims 50 MB: the bytes it really occupies in the archive still count."""
    lying = _patch_central_directory(zip_bomb, "data/zeros.bin", compress_size=50 * 2**20)
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match="decompression bomb"):
        safe_extract(lying, dest)
    assert not dest.exists() and _staging_left(tmp_path) == []


def test_a_bomb_whose_header_declares_a_small_size_is_refused(zip_bomb, tmp_path):
    """file_size claims 1 MB: zipfile stops there and the CRC of what came out is wrong."""
    lying = _patch_central_directory(zip_bomb, "data/zeros.bin", file_size=2**20)
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match=r"cannot extract .*Bad CRC-32.*nothing was extracted"):
        safe_extract(lying, dest)
    assert not dest.exists() and _staging_left(tmp_path) == []


def test_a_member_shorter_than_its_header_says_is_refused_by_the_stream_check(tmp_path):
    archive = tmp_path / "short.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"first")
        zf.writestr("b.bin", b"0123456789")
    lying = _patch_central_directory(archive, "b.bin", file_size=20)
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match="10 bytes of data where its header declares 20"):
        safe_extract(lying, dest)
    assert not dest.exists() and _staging_left(tmp_path) == []


def test_the_stream_check_stops_at_the_declared_size_and_the_budget(tmp_path):
    from vlm_core.weights.archive import _Refused, _write_member

    with pytest.raises(_Refused, match="more data than the 10 bytes its header declares"):
        _write_member(io.BytesIO(b"x" * 100), tmp_path / "a", "a", 10, 1000)
    with pytest.raises(_Refused, match="beyond the archive's size cap"):
        _write_member(io.BytesIO(b"x" * 100), tmp_path / "b", "b", 100, 50)


def test_a_zip_whose_last_member_is_corrupt_leaves_nothing(tmp_path):
    archive = _zip(tmp_path / "w.zip", {f"set/{i}.txt": b"payload %d" % i for i in range(5)})
    bad = _patch_central_directory(archive, "set/4.txt", crc=0xDEADBEEF)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(WeightsError, match=r"Bad CRC-32 for file 'set/4.txt'"):
        safe_extract(bad, dest)
    assert not (tmp_path / "out").exists()  # the parent it created is gone too


def test_an_existing_destination_is_left_as_it_was_when_extraction_fails(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    archive = _zip(tmp_path / "w.zip", {"a.txt": b"a", "b.txt": b"b"})
    bad = _patch_central_directory(archive, "b.txt", crc=1)
    with pytest.raises(WeightsError, match="Bad CRC-32"):
        safe_extract(bad, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt"]
    assert [p.name for p in safe_extract(archive, dest)] == ["a.txt", "b.txt"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "b.txt", "mine.txt"]
    with pytest.raises(WeightsError, match="already exists in"):
        safe_extract(archive, dest)  # nothing is replaced
    assert (dest / "mine.txt").read_text() == "keep"


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_tar_whose_last_member_is_truncated_leaves_nothing(tmp_path):
    data = _tar_bytes({"a.bin": b"a" * 2000, "b.bin": b"b" * 5000})
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: 512 * 6 + 100])  # a's header and data, b's header, a bit of b
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match=r"cannot extract .*unexpected end of data"):
        safe_extract(cut, dest)
    assert not dest.exists() and _staging_left(tmp_path) == []


def test_a_tar_whose_last_header_is_damaged_leaves_nothing(tmp_path):
    """tarfile itself stops quietly at a damaged header after the first; safe_extract refuses."""
    data = bytearray(_tar_bytes({"a.bin": b"a" * 600, "b.bin": b"b" * 10}))
    data[512 * 3 : 512 * 3 + 100] = b"\xff" * 100  # b's header (after a's header + 2 blocks)
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(WeightsError, match=r"member 'a\.bin' has a damaged header after it"):
        safe_extract(damaged, dest)
    assert not dest.exists()


def test_a_truncated_tar_gz_leaves_nothing(tmp_path):
    import gzip

    data = gzip.compress(_tar_bytes({"a.bin": os.urandom(4000), "b.bin": os.urandom(4000)}))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) - 2000])
    with pytest.raises(WeightsError, match="cannot extract"):
        safe_extract(cut, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_tar_gz_bomb_is_refused_at_its_header(tmp_path):
    import gzip

    class Zeros(io.RawIOBase):
        def __init__(self, n: int) -> None:
            self.left = n

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    archive = tmp_path / "bomb.tar.gz"
    with gzip.open(archive, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 16 * 2**20
        tf.addfile(info, io.BufferedReader(Zeros(info.size)))
    with pytest.raises(WeightsError, match=r"member 'zeros\.bin' has an expansion of 16777216"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_symlink_chain_out_of_the_destination_is_refused(tmp_path):
    """Each link looks inside on paper; on disk the second one resolves to the parent."""
    members = [
        _member("b", tarfile.DIRTYPE),
        _member("a", tarfile.SYMTYPE, "b/.."),
        _member("a2", tarfile.SYMTYPE, "a/.."),
        _member("a2/evil.txt", size=4),
    ]
    archive = _tar(tmp_path / "chain.tar", members)
    with pytest.raises(WeightsError, match="refusing to extract"):
        safe_extract(archive, tmp_path / "x" / "dest")
    assert not (tmp_path / "x" / "evil.txt").exists() and not (tmp_path / "x").exists()


def test_zip_members_compressed_with_bzip2_are_refused(tmp_path):
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("a.txt", b"a" * 100)
    with pytest.raises(WeightsError, match="compression method 12"):
        safe_extract(archive, tmp_path / "dest")


def test_the_default_cap_is_tied_to_free_space(tmp_path, monkeypatch):
    from vlm_core.weights import archive as archive_mod

    monkeypatch.setattr(archive_mod, "_free_bytes", lambda dest: 10 * 1024**3)
    assert archive_mod.default_max_bytes(tmp_path) == 4 * 1024**3
    monkeypatch.setattr(archive_mod, "_free_bytes", lambda dest: 150)
    assert archive_mod.default_max_bytes(tmp_path) == 75
    archive = _zip(tmp_path / "w.zip", {"a.bin": b"x" * 100})
    with pytest.raises(WeightsError, match=r"100 bytes > 75 .*half the free space"):
        safe_extract(archive, tmp_path / "dest")


def test_small_very_compressible_members_pass_the_ratio_check(tmp_path):
    archive = tmp_path / "masks.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("empty-mask.raw", bytes(2**20))  # 1 MiB of zeros: 1000:1, under the floor
    [extracted] = safe_extract(archive, tmp_path / "dest")
    assert extracted.stat().st_size == 2**20


# ---------------------------------------------------------------------------------------------
# the store


def test_import_file_into_the_store(st_file, isolated):
    digest = sha256_of(st_file)
    entry = import_file(st_file, sha256=digest.upper())
    assert entry.path == isolated / "weights" / "sha256" / digest / "tiny.safetensors"
    assert entry.path.read_bytes() == st_file.read_bytes()
    assert not os.access(entry.path, os.W_OK) or os.geteuid() == 0  # read-only for users
    assert not stat.S_IMODE(entry.path.stat().st_mode) & 0o222
    assert import_file(st_file).path == entry.path  # importing again is a no-op
    assert find_in_store(digest, "other.safetensors") == entry.path
    assert [e.sha256 for e in list_store()] == [digest]


def test_import_with_the_wrong_sha256_leaves_nothing(st_file):
    with pytest.raises(ChecksumError, match="refusing to import"):
        import_file(st_file, sha256=ZERO_SHA)
    assert list_store() == []
    assert [p for p in store_dir().rglob("*") if p.is_file()] == []
    with pytest.raises(WeightsError, match="no such file"):
        import_file(st_file.with_name("absent.safetensors"))


# ---------------------------------------------------------------------------------------------
# resolution


def test_resolve_local_path_checks_it(st_file):
    digest = sha256_of(st_file)
    assert resolve(str(st_file)) == st_file
    assert resolve(str(st_file), sha256=digest) == st_file
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        resolve(str(st_file), sha256=ZERO_SHA, plugin="art")
    with pytest.raises(WeightsError, match="no such file") as info:
        resolve(WeightsRef(name="x", filename=str(st_file.with_name("gone.safetensors"))))
    assert "gone.safetensors" in str(info.value) and "no sha256 pinned" in str(info.value)
    with pytest.raises(WeightsError, match="two different sha256"):
        resolve(WeightsRef(name="x", filename=str(st_file), sha256=digest), sha256=ZERO_SHA)


def test_resolve_consults_the_store_first(st_file, monkeypatch):
    digest = sha256_of(st_file)
    stored = import_file(st_file).path
    monkeypatch.setenv("VLM_OFFLINE", "1")
    ref = WeightsRef(
        name="tiny", filename="tiny.safetensors", source="hf-hub:org/repo", sha256=digest
    )
    assert resolve(ref, plugin="driving") == stored
    assert locate("hf-hub:org/repo/tiny.safetensors", sha256=digest) == stored


def _assert_names_plugin_file_and_sha(message: str, plugin: str, filename: str, sha: str) -> None:
    assert f"plugin '{plugin}'" in message
    assert filename in message
    assert f"expected sha256 {sha}" in message
    assert "vlm weights import PATH" in message


@pytest.mark.parametrize("flag", ["VLM_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_resolution_fails_fast_naming_plugin_file_and_sha(monkeypatch, flag):
    monkeypatch.setenv(flag, "1")
    sha = "ab" * 32
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        resolve("hf-hub:org/repo/model.safetensors", plugin="driving", sha256=sha)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0
    message = str(info.value)
    _assert_names_plugin_file_and_sha(message, "driving", "model.safetensors", sha)
    assert f"{flag}=1" in message and f"unset {flag}" in message


def test_without_network_resolution_fails_within_a_second(monkeypatch):
    """A network that never answers (packets dropped) still gives an answer within a second."""
    release = threading.Event()

    def hang(*args: object, **kwargs: object) -> None:
        release.wait(30)
        raise OSError("released")

    def must_not_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("no download may start without a network")

    import huggingface_hub

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_download)
    monkeypatch.setattr(download_mod.urllib.request, "urlopen", must_not_download)
    sha = "cd" * 32
    ref = WeightsRef(name="r18", filename="model.safetensors", source="hf-hub:timm/r18", sha256=sha)
    start = time.monotonic()
    try:
        with pytest.raises(WeightsError) as info:
            resolve(ref, plugin="medical")
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert elapsed < 1.0
    message = str(info.value)
    _assert_names_plugin_file_and_sha(message, "medical", "model.safetensors", sha)
    assert "no network" in message


def test_unresolvable_host_fails_fast_and_tries_every_location(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    with pytest.raises(WeightsError, match="no network") as info:
        resolve("hf-hub:org/repo")
    message = str(info.value)
    assert "cannot reach hub.invalid:443" in message
    assert "hf-hub:org/repo/model.safetensors" in message
    assert "hf-hub:org/repo/pytorch_model.bin" in message


def _fake_hf_cache(root: Path, repo: str, filename: str, data: bytes) -> Path:
    commit = "1" * 40
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    path = folder / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def test_offline_resolution_uses_the_hugging_face_cache(st_file, tmp_path, monkeypatch):
    cached = _fake_hf_cache(
        tmp_path / "hf-cache", "org/repo", "model.safetensors", st_file.read_bytes()
    )
    monkeypatch.setenv("VLM_OFFLINE", "1")
    digest = sha256_of(st_file)
    assert resolve("hf-hub:org/repo", sha256=digest) == cached  # default file name
    assert resolve("hf-hub:org/repo/model.safetensors") == cached
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        resolve("hf-hub:org/repo/model.safetensors", sha256=ZERO_SHA)
    assert load_state_dict(cached, sha256=digest).keys() == _tensors().keys()


def test_offline_resolution_uses_the_torch_hub_cache(tmp_path, monkeypatch):
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / "rn-00ff.pth"
    cached.parent.mkdir(parents=True)
    torch.save(_tensors(), cached)
    monkeypatch.setenv("VLM_OFFLINE", "1")
    assert resolve("https://host.org/models/rn-00ff.pth") == cached
    with pytest.raises(WeightsError, match="downloads are off"):
        resolve("https://host.org/models/other.pth")


class _FakeResponse(io.BytesIO):
    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_url_download_is_verified_and_atomic(st_file, tmp_path, monkeypatch):
    data = st_file.read_bytes()
    monkeypatch.setattr(download_mod, "unreachable_reason", lambda url, timeout: None)
    monkeypatch.setattr(
        download_mod.urllib.request, "urlopen", lambda req, timeout: _FakeResponse(data)
    )
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    with pytest.raises(ChecksumError, match="the download was discarded"):
        resolve("https://host.org/w/tiny.safetensors", sha256=ZERO_SHA, plugin="art")
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []
    path = resolve("https://host.org/w/tiny.safetensors", sha256=sha256_of(st_file))
    assert path == checkpoints / "tiny.safetensors" and path.read_bytes() == data
    assert [p.name for p in checkpoints.iterdir()] == ["tiny.safetensors"]  # no .part left


def test_hub_download_falls_back_from_safetensors_to_bin(tmp_path, monkeypatch):
    from huggingface_hub import errors as hf_errors

    requested: list[str] = []

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        requested.append(filename)
        if filename.endswith(".safetensors"):
            http = sys.modules[hf_errors.Response.__module__.split(".")[0]]
            request = http.Request("GET", f"https://huggingface.co/{repo_id}/{filename}")
            response = hf_errors.Response(404, request=request)
            raise hf_errors.RemoteEntryNotFoundError("404", response=response)
        path = tmp_path / "dl" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_tensors(), path)
        return str(path)

    import huggingface_hub

    monkeypatch.setattr(download_mod, "unreachable_reason", lambda url, timeout: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    path = resolve("hf-hub:org/repo")
    assert requested == ["model.safetensors", "pytorch_model.bin"]
    assert path.name == "pytorch_model.bin"
    assert set(load_state_dict(path)) == set(_tensors())


def test_timm_reference_uses_timms_pretrained_config(tmp_path, monkeypatch):
    found = locations(parse_ref("timm:resnet18.a1_in1k"))
    assert found[:2] == [
        HubFile("timm/resnet18.a1_in1k", "model.safetensors"),
        HubFile("timm/resnet18.a1_in1k", "pytorch_model.bin"),
    ]
    assert isinstance(found[2], UrlFile) and found[2].url.endswith("resnet18_a1_0-d63eafa0.pth")
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet18_a1_0-d63eafa0.pth"
    cached.parent.mkdir(parents=True)
    torch.save(_tensors(), cached)
    monkeypatch.setenv("VLM_OFFLINE", "1")
    assert resolve("timm:resnet18.a1_in1k") == cached  # timm's own URL cache counts
    with pytest.raises(WeightsError, match=r"did you mean 'resnet18\.a1_in1k'"):
        resolve("timm:resnet18.a1_in1kk", plugin="driving")


def test_torchvision_reference_uses_the_weights_enum():
    assert locations(parse_ref("torchvision:ResNet18_Weights.IMAGENET1K_V1")) == [
        UrlFile("https://download.pytorch.org/models/resnet18-f37072fd.pth")
    ]
    with pytest.raises(WeightsError, match="torchvision has no weights"):
        locations(parse_ref("torchvision:ResNet18_Weights.NOPE"))


def test_open_clip_reference(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # not installed
    with pytest.raises(WeightsError, match="needs open_clip, which is not installed") as info:
        resolve("open_clip:ViT-B-32/openai", plugin="caption")
    assert "pip install open_clip_torch" in str(info.value)

    fake = type(sys)("open_clip")
    cfgs = {("ViT-B-32", "openai"): {"hf_hub": "timm/vit_base_patch32_clip_224.openai/"}}
    fake.get_pretrained_cfg = lambda arch, tag: cfgs.get((arch, tag), {})  # type: ignore[attr-defined]
    fake.list_pretrained = lambda: list(cfgs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    assert locations(parse_ref("open_clip:ViT-B-32/openai")) == [
        HubFile("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors"),
        HubFile("timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin"),
    ]
    with pytest.raises(WeightsError, match="did you mean 'ViT-B-32/openai'"):
        locations(parse_ref("open_clip:ViT-B-32/openal"))


# ---------------------------------------------------------------------------------------------
# a training folder's pointer file after a kill

_KILLED_DURING_RENAME = """
import os, signal, sys
from pathlib import Path
from vlm_core import fileio
def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)  # the kill lands after the temp file is written
fileio.os.replace = killed
fileio.atomic_write_text(Path(sys.argv[1]), '{"last": "step-00000002"}')
"""


def test_a_pointer_file_left_by_a_kill_is_removed_at_the_next_start(tmp_path):
    from vlm_core.training.checkpoint import prune, read_pointer
    from vlm_core.weights.trained import POINTER

    out = tmp_path / "run"
    out.mkdir()
    (out / POINTER).write_text('{"last": "step-00000001", "best": "step-00000001"}')
    proc = subprocess.run([sys.executable, "-c", _KILLED_DURING_RENAME, str(out / POINTER)])
    assert proc.returncode == -9
    [stale] = [p for p in out.iterdir() if p.name != POINTER]
    assert stale.name.startswith(f".{POINTER}.") and stale.name.endswith(".tmp")
    assert read_pointer(out)["last"] == "step-00000001"  # the old pointer is intact
    prune(out, keep_last=2)  # what the trainer does when it starts
    assert [p.name for p in out.iterdir()] == [POINTER]
