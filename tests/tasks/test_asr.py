"""The ASR task: WER on hand-computed cases, normalization, the seeded corpus and its splits."""

import pytest

from accelsim.errors import AccelsimError
from accelsim.tasks import asr, speech
from accelsim.tasks._data import disjoint_splits


@pytest.mark.parametrize(("reference", "hypothesis", "errors"), [
    ("a b c", "a b c", 0),
    ("a b c", "a x c", 1),  # one substitution
    ("a b c", "a c", 1),  # one deletion
    ("a b", "a b c", 1),  # one insertion
    ("", "a b", 2),
    ("a b", "", 2),
    ("the cat sat on the mat", "cat sat on a mat today", 3),  # del the, sub the->a, ins today
    ("a b c d", "b a d c", 3),  # insert b, substitute b -> d, delete the last d
])
def test_word_errors_hand_computed(reference, hypothesis, errors):
    assert asr.word_errors(reference.split(), hypothesis.split()) == errors


def test_wer_sums_errors_over_reference_words():
    # 1 insertion + 1 deletion over 3 + 2 reference words.
    assert asr.wer_pct(["the cat sat", "a dog"], ["The cat sat down.", "dog"]) == 40.0
    assert asr.wer_pct(["Don't stop"], ["dont STOP!"]) == 0.0


@pytest.mark.parametrize(("refs", "hyps", "fragment"), [
    (["a b"], [], "1 references but 0 hypotheses"),
    (["..."], ["a"], "the references hold no words"),
])
def test_wer_bad_input_is_one_line(refs, hyps, fragment):
    with pytest.raises(AccelsimError, match=fragment) as info:
        asr.wer_pct(refs, hyps)
    assert "\n" not in str(info.value)


def test_normalize_lowercases_drops_apostrophes_and_spells_numbers():
    assert asr.normalize("Don't STOP, it\u2019s 42 well-known!") == [
        "dont", "stop", "its", "forty", "two", "well", "known"]
    assert asr.number_words(0) == "zero"
    assert asr.number_words(70) == "seventy"
    assert asr.number_words(100) == "one hundred"
    assert asr.number_words(1905) == "one thousand nine hundred five"
    assert asr.number_words(2_000_013) == "two million thirteen"


@pytest.mark.assets("wordnet-base")
def test_corpus_splits_are_disjoint_short_plain_sentences():
    splits = asr.split_sentences()
    assert {s: len(v) for s, v in splits.items()} == asr.SENTENCES_PER_SPLIT
    seen = [tuple(asr.normalize(s)) for v in splits.values() for s in v]
    assert len(set(seen)) == len(seen)  # no sentence in two splits (or twice in one)
    for words in seen:
        assert asr.MIN_WORDS <= len(words) <= asr.MAX_WORDS
        assert all(w.isalpha() for w in words)
    # The training sentences added after the test split moved no earlier sentence: the splits
    # cut without them are the same validation and test, and the train split's first part.
    first_counts = {**asr.SENTENCES_PER_SPLIT, "train": asr.FIRST_TRAIN_SENTENCES}
    first_cut = disjoint_splits(asr.read_sentences(), first_counts)
    assert first_cut["val"] == splits["val"] and first_cut["test"] == splits["test"]
    assert first_cut["train"] == splits["train"][:asr.FIRST_TRAIN_SENTENCES]
    # The train split was 12,000 sentences before it took the whole corpus: those are its start.
    twelve_thousand = disjoint_splits(asr.read_sentences(), first_counts, extra_train=10_000)
    assert twelve_thousand["train"] == splits["train"][:12_000]
    assert sum(len(v) for v in splits.values()) == len(asr.read_sentences())  # all of it


@pytest.mark.assets("wordnet-base")
def test_utterances_are_seeded_and_speakers_unseen_across_splits():
    voices = {split: {u.variant for u in asr.utterances(split)} for split in ("train", "val",
                                                                                "test")}
    assert not voices["test"] & (voices["train"] | voices["val"])
    assert not voices["val"] & voices["train"]
    assert voices["test"] <= set(speech.split_variants()["test"])
    first = asr.utterances("val", 5)
    assert first == asr.utterances("val")[:5]  # a limit never changes an utterance
    assert all(u.accent in asr.ACCENTS for u in first)
    with pytest.raises(AccelsimError, match="limit 0 val utterances; allowed: 1 .. 500 or None"):
        asr.utterances("val", 0)
    with pytest.raises(AccelsimError, match="limit 30609 train utterances; allowed: 1 .. 30608"):
        asr.utterances("train", 30_609)
    # Every utterance has its own wav: the corpus holds two sentences with one CRC-32
    # ("a stone wall trails raggedly through the woods", "the baby was quiet for a while"),
    # which once shared a file.
    everyone = [u for split in ("train", "val", "test") for u in asr.utterances(split)]
    assert len({u.stem for u in everyone}) == len(everyone)
