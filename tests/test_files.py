import pytest

from accelsim import files


@pytest.fixture()
def package(tmp_path, monkeypatch):
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "b.py").write_text("B = 1\n")
    (tmp_path / "sim" / "a.py").write_text("A = 1\n")
    (tmp_path / "hw.py").write_text("HW = 1\n")
    monkeypatch.setattr(files, "PACKAGE_ROOT", tmp_path)
    files.source_digest.cache_clear()
    yield tmp_path
    files.source_digest.cache_clear()


def test_source_digest_follows_the_bytes_and_is_read_once(package):
    before = files.source_digest("sim", "hw.py")
    assert files.source_digest("sim", "hw.py") == before
    (package / "sim" / "b.py").write_text("B = 2\n")
    assert files.source_digest("sim", "hw.py") == before  # cached for the process
    files.source_digest.cache_clear()
    assert files.source_digest("sim", "hw.py") != before
    assert files.source_digest("sim") != files.source_digest("sim", "hw.py")
