"""analysis.style: PNG + PDF saving, atomic, one shared style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from analysis.style import save_figure  # noqa: E402
from sttn_sim.errors import SttnError  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def simple_figure():
    fig, ax = plt.subplots()
    ax.bar([0, 1, 2], [0.25, 0.5, 0.25])
    return fig


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_save_figure_png_and_pdf(tmp_path):
    fig = simple_figure()
    out = tmp_path / "figs" / "sub"
    paths = save_figure(fig, out, "sparsity")
    assert paths == [out / "sparsity.png", out / "sparsity.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png[:8] == PNG_SIGNATURE and len(png) > 1000
    assert pdf[:5] == b"%PDF-" and len(pdf) > 1000
    assert pdf.rstrip().endswith(b"%%EOF")
    assert sorted(p.name for p in out.iterdir()) == ["sparsity.pdf", "sparsity.png"]


@pytest.mark.parametrize("formats, header", [(("png",), PNG_SIGNATURE), (("pdf",), b"%PDF-")])
def test_save_figure_single_format(tmp_path, formats, header):
    fig = simple_figure()
    (path,) = save_figure(fig, tmp_path, "f", formats=formats)
    assert path == tmp_path / f"f.{formats[0]}"
    assert path.read_bytes()[: len(header)] == header
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_figure_is_atomic(tmp_path, monkeypatch):
    """A failure while writing the PDF leaves the old PDF intact and no temporary file."""
    fig = simple_figure()
    (tmp_path / "f.png").write_bytes(b"old png")
    (tmp_path / "f.pdf").write_bytes(b"old pdf")
    real_savefig = fig.savefig
    partial = []

    def failing_savefig(fname, *args, format=None, **kwargs):
        if format == "pdf":
            with open(fname, "wb") as f:
                f.write(b"%PDF-1.4 half a file")
            partial.append(fname)
            raise RuntimeError("renderer crashed")
        return real_savefig(fname, *args, format=format, **kwargs)

    monkeypatch.setattr(fig, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        save_figure(fig, tmp_path, "f")
    assert len(partial) == 1 and partial[0] != tmp_path / "f.pdf"
    assert (tmp_path / "f.pdf").read_bytes() == b"old pdf"
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_SIGNATURE  # the PNG finished before the failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_save_figure_bad_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fig = simple_figure()
    with pytest.raises(SttnError, match="file"):
        save_figure(fig, blocker, "f")
