"""bench/peer_flair.py's data conversion, without flair (the script imports it only inside `train`): the CoNLL-U and
WNUT readers, the column files, and the split sizes SOURCE.md records for the shared copies."""

from pathlib import Path

import pytest

from tests.conftest import load_bench_script


CONLLU = """# sent_id = a
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = b
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""

WNUT = "New\tB-location\nYork\tI-location\nrocks\tO\n\nlol\tO\n"


@pytest.fixture(scope="module")
def peer():
    return load_bench_script("peer_flair")


def test_conllu_skips_comments_multiword_tokens_and_empty_nodes(peer, tmp_path):
    path = tmp_path / "x.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    assert peer.read_conllu_upos(path) == [
        [("Do", "AUX"), ("n't", "PART"), ("go", "VERB"), (".", "PUNCT")],
        [("Hi", "INTJ")],
    ]


def test_wnut_reader_and_column_files_round_trip(peer, tmp_path):
    source = tmp_path / "wnut.conll"
    source.write_text(WNUT, encoding="utf-8")
    sentences = peer.read_wnut(source)
    assert sentences == [[("New", "B-location"), ("York", "I-location"), ("rocks", "O")], [("lol", "O")]]
    peer.write_columns(sentences, tmp_path / "train.txt")
    assert peer.read_wnut(tmp_path / "train.txt") == sentences
    assert peer.char_counts(sentences)["o"] == 3  # York, rocks, lol


def test_parse_args_default_work_folder(peer):
    args = peer.parse_args(["--task", "wnut17", "--minutes", "5", "--embeddings", "char"])
    assert args.work == Path("runs/peer_flair/wnut17-char-5min")


@pytest.mark.skipif(not (load_bench_script("peer_flair").DEFAULT_DATA / "wnut17").is_dir(), reason="no shared data")
def test_shared_splits_match_source_md(peer, tmp_path):
    # SOURCE.md: WNUT-17 3,394 / 1,009 / 1,287 posts; UD EWT dev 2,001 sentences and 25,147 syntactic words
    assert peer.prepare("wnut17", peer.DEFAULT_DATA, tmp_path) == {"train": 3394, "dev": 1009, "test": 1287}
    dev = peer.read_conllu_upos(peer.DEFAULT_DATA / "ud_english_ewt" / "en_ewt-ud-dev.conllu")
    assert (len(dev), sum(map(len, dev))) == (2001, 25147)
    assert len({tag for sentence in dev for _token, tag in sentence}) == 17
