from __future__ import annotations

from pathlib import Path

import pytest

from polymodal.errors import ConfigError, IndexError_
from polymodal.pipelines._gallery import GalleryItem, GallerySection, render_gallery
from polymodal.pipelines.crossmodal import ImageLibrary, LibraryConfig, load_dense_embedder, reindex
from tests.pipelines.crossmodal_fixtures import BAD, GOOD, PixelEmbedder, make_library


@pytest.fixture(scope="module")
def library_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_library(tmp_path_factory.mktemp("photos"))


@pytest.fixture
def library(tmp_path: Path, library_files: dict[str, Path]) -> ImageLibrary:
    lib = ImageLibrary(tmp_path / "idx", PixelEmbedder())
    summary = lib.index([library_files["red1.png"].parent], batch_size=4)
    assert summary.indexed == len(GOOD)
    return lib


def test_index_records_bad_files_and_keeps_going(tmp_path: Path, library_files: dict[str, Path]) -> None:
    embedder = PixelEmbedder()
    with ImageLibrary(tmp_path / "idx", embedder) as lib:
        seen: list[tuple[int, int]] = []
        summary = lib.index(
            [library_files["red1.png"].parent], batch_size=3, progress=lambda d, t: seen.append((d, t))
        )
        assert summary.found == len(GOOD) + len(BAD)  # notes.txt is not an image suffix: not picked up
        assert summary.indexed == len(GOOD) and summary.unchanged == 0
        failed = {Path(p).name: reason for p, reason in summary.failed}
        assert set(failed) == set(BAD)
        assert "limit" in failed["bomb.png"]  # names the limit it hit
        assert dict(lib.failures()).keys() == {str(library_files[n].resolve()) for n in BAD}
        assert seen[-1] == (summary.found, summary.found)
        assert len(lib.vectors) == len(GOOD)
        # resumable and idempotent: a second run embeds no good image again; failed ones are retried
        calls = embedder.image_calls
        again = lib.index([library_files["red1.png"].parent])
        assert again.indexed == 0 and again.unchanged == len(GOOD)
        assert {Path(p).name for p, _ in again.failed} == set(BAD)
        assert embedder.image_calls - calls <= 2  # only corrupt.png reaches the embedder (batch, then alone)
        # an explicitly named unsupported file is recorded, not crashed on
        explicit = lib.index([library_files["red1.png"].parent / "notes.txt"])
        assert len(explicit.failed) == 1 and explicit.indexed == 0


def test_payloads_and_conversions(library: ImageLibrary, library_files: dict[str, Path]) -> None:
    hits = library.search_image(library_files["yellow_cmyk.jpg"], k=1)
    assert Path(hits[0].path).name == "yellow_cmyk.jpg"  # CMYK converted, matches itself
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].payload["width"] == 120 and hits[0].payload["height"] == 90
    pano = library.search_image(library_files["panorama.jpg"], k=1)[0]
    assert Path(pano.path).name == "panorama.jpg" and pano.payload["width"] == 6000
    library.close()


def test_text_search_finds_the_right_colour(library: ImageLibrary) -> None:
    for colour, expected in {
        "red": {"red1.png", "red2.jpg"},
        "green": {"green1.png", "green_palette.gif"},
    }.items():
        top = {Path(h.path).name for h in library.search(f"something {colour}", k=2)}
        assert top == expected
    hits = library.search("blue things", k=3)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert {Path(h.path).name for h in hits} == {"blue1.webp", "blue1_copy.jpg", "blue_alpha.png"}
    library.close()


def test_filtered_search(library: ImageLibrary, library_files: dict[str, Path]) -> None:
    only = library.search("red", k=5, filter={"name": "green1.png"})
    assert [Path(h.path).name for h in only] == ["green1.png"]
    library.close()


def test_dedup_groups_the_resized_copy(library: ImageLibrary) -> None:
    groups = library.dedup(threshold=0.97)
    names = [{Path(p).name for p in g.paths} for g in groups]
    assert {"blue1.webp", "blue1_copy.jpg"} in names
    assert all(len(g.paths) == len(g.scores) and g.scores[0] == pytest.approx(1.0, abs=1e-5) for g in groups)
    assert library.dedup(threshold=1.0) == []
    with pytest.raises(ConfigError):
        library.dedup(threshold=2.0)
    library.close()


def test_classify_indexed_and_given_images(library: ImageLibrary, library_files: dict[str, Path]) -> None:
    results = {Path(r.path).name: r for r in library.classify(["red", "green", "blue", "yellow"])}
    assert results["red1.png"].best == "red"
    assert results["green_palette.gif"].best == "green"
    assert results["blue_alpha.png"].best == "blue"
    assert results["yellow_cmyk.jpg"].best == "yellow"
    probabilities = [p for _, _, p in results["red1.png"].labels]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)  # softmax for an embedder without calibration
    given = library.classify(["blue", "red"], [library_files["blue1.webp"]])
    assert given[0].best == "blue" and given[0].path.endswith("blue1.webp")
    with pytest.raises(ConfigError):
        library.classify([" ", ""])
    library.close()


def test_another_model_is_refused_and_reindex_rebuilds(tmp_path: Path, library: ImageLibrary) -> None:
    library.close()

    class Other(PixelEmbedder):
        id = "fake:other"

    with pytest.raises(IndexError_, match="built with fake:pixels-4x4"):
        ImageLibrary(tmp_path / "idx", Other())
    seen: list[tuple[int, int]] = []
    summary = reindex(tmp_path / "idx", Other(), progress=lambda d, t: seen.append((d, t)))
    assert summary.indexed == len(GOOD) and seen[-1][0] == seen[-1][1]  # failed files are tried again
    config = LibraryConfig.read(tmp_path / "idx")
    assert config is not None and config.embedder_id == "fake:other"
    with ImageLibrary(tmp_path / "idx", Other(), read_only=True) as rebuilt:
        assert len(rebuilt.vectors) == len(GOOD)
        assert Path(rebuilt.search("yellow", k=1)[0].path).name in {"yellow_cmyk.jpg", "panorama.jpg"}
    assert not (tmp_path / "idx.reindex").exists() and not (tmp_path / "idx.old").exists()


def test_changed_and_removed_files_are_followed(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    photos = tmp_path / "photos"
    photos.mkdir()
    PILImage.new("RGB", (20, 20), (220, 20, 20)).save(photos / "a.png")
    PILImage.new("RGB", (20, 20), (20, 20, 220)).save(photos / "b.png")
    with ImageLibrary(tmp_path / "idx", PixelEmbedder()) as lib:
        assert lib.index([photos]).indexed == 2
        PILImage.new("RGB", (20, 20), (20, 200, 40)).save(photos / "a.png")  # changed content
        (photos / "b.png").unlink()
        summary = lib.index([photos], sync=True)
        assert summary.indexed == 1 and summary.removed == [str((photos / "b.png").resolve())]
        assert len(lib.vectors) == 1
        assert lib.search("green", k=1)[0].score == pytest.approx(1.0, abs=1e-4)


def test_opening_without_a_model_or_index_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a model"):
        ImageLibrary(tmp_path / "new")
    with pytest.raises(ConfigError, match="not an image index"):
        ImageLibrary(tmp_path / "missing", PixelEmbedder(), create=False)
    with pytest.raises(ConfigError, match="no dense image/text embedder"):
        load_dense_embedder("openai:gpt-5")


def test_gallery_embeds_thumbnails_and_escapes(library_files: dict[str, Path]) -> None:
    page = render_gallery(
        "<script>alert(1)</script>",
        [
            GallerySection(
                "q", [GalleryItem(str(library_files["red1.png"]), 0.91234), GalleryItem("/nope/<x>.png", 0.5)]
            )
        ],
    )
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("data:image/jpeg;base64,") == 1
    assert "0.9123" in page and "unavailable" in page and "&lt;x&gt;" in page
