"""Retrieval on the real sample knowledge base with the real MiniLM embeddings: the right
file for each question, the no-context path for chit-chat, hybrid search on a misheard name,
sentence selection, the vocabulary, and every supported file format."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from daemon.kb import KnowledgeBase, select_sentences
from daemon.messages import Passage
from tests.fixtures_kb import SAMPLE_KB

LIGHTHOUSE = "skerrimore_lighthouse.md"
KETTLE = "zephyr_kettle_manual.txt"
BAKERY = "quillfeather_bakery_handbook.pdf"


@pytest.fixture(scope="module")
def sample_kb(tmp_path_factory: pytest.TempPathFactory, kb_rag_config: Any, minilm: Any) -> KnowledgeBase:
    base = tmp_path_factory.mktemp("sample")
    shutil.copytree(SAMPLE_KB, base / "kb")
    cfg = dataclasses.replace(kb_rag_config, knowledge_base=str(base / "kb"), index_dir=str(base / "index"))
    kb = KnowledgeBase(cfg, embedder=minilm)
    kb.open()
    return kb


@pytest.mark.parametrize("question, source, fact", [
    ("How tall is Skerrimore lighthouse?", LIGHTHOUSE, "38 metres"),
    ("Who designed the lighthouse on Hallow Island?", LIGHTHOUSE, "Morag Tullach"),
    ("What colour does the Skerrimore light flash?", LIGHTHOUSE, "green"),
    ("What does error E7 mean on my kettle?", KETTLE, "scale sensor"),
    ("How much water does the Zephyr K-420 hold?", KETTLE, "1.7 litres"),
    ("What is the warranty phone number for the kettle?", KETTLE, "0800 555 0142"),
    ("What time does the Quillfeather bakery open?", BAKERY, "6:45"),
    ("What is the name of the bakery's sourdough starter?", BAKERY, "Gertrude"),
    ("Who is the head baker at Quillfeather?", BAKERY, "Ottoline Praske"),
])
def test_questions_find_the_right_document_first(sample_kb: KnowledgeBase, question: str, source: str,
                                                 fact: str) -> None:
    passages = sample_kb.retrieve(question)
    assert passages[0].source == source, passages
    assert sample_kb.is_relevant(passages)
    assert any(fact in p.text for p in passages if p.source == source)


@pytest.mark.parametrize("chat", ["Tell me a joke.", "How are you today?", "What is the capital of France?",
                                  "Play some music please.", "Tell me about a scary movie."])
def test_chit_chat_takes_the_no_context_path(sample_kb: KnowledgeBase, chat: str) -> None:
    passages = sample_kb.retrieve(chat)
    assert not sample_kb.is_relevant(passages), passages


def test_passages_keep_file_position_and_heading(sample_kb: KnowledgeBase) -> None:
    best = sample_kb.retrieve("How often does the lamp flash?")[0]
    assert best.source == LIGHTHOUSE
    assert best.heading == "Skerrimore Lighthouse > The light"
    assert best.position == 1
    assert "every 7 seconds" in best.text
    kettle = sample_kb.retrieve("What does E4 mean?")[0]
    assert kettle.heading.endswith("Error codes")


def test_hybrid_finds_a_misheard_name(sample_kb: KnowledgeBase, kb_rag_config: Any, minilm: Any,
                                      tmp_path: Path) -> None:
    # Whisper tiny.en hears "Skerrimore lighthouse" as "mascara in more light".
    garbled = "mascara in more light"
    hybrid = sample_kb.retrieve(garbled)
    assert hybrid[0].source == LIGHTHOUSE and sample_kb.is_relevant(hybrid), hybrid
    # The same index searched by embeddings alone does not get there: hybrid is what helps.
    dense_cfg = dataclasses.replace(sample_kb.cfg, hybrid=False)
    dense_kb = KnowledgeBase(dense_cfg, embedder=minilm)
    dense = dense_kb.retrieve(garbled)
    assert not dense_kb.is_relevant(dense), dense
    assert hybrid[0].score > dense[0].score


@pytest.mark.parametrize("garbled, source", [
    ("when was skerry more first lit", LIGHTHOUSE),
    ("who was Morag Tulloch", LIGHTHOUSE),
    ("what does quill feather sell", BAKERY),
])
def test_hybrid_on_other_misheard_names(sample_kb: KnowledgeBase, garbled: str, source: str) -> None:
    passages = sample_kb.retrieve(garbled)
    assert passages[0].source == source and sample_kb.is_relevant(passages), passages


def test_vocabulary_has_names_and_codes(sample_kb: KnowledgeBase) -> None:
    terms = sample_kb.vocabulary()
    for expected in ("Skerrimore", "Tullach", "K-420", "E7", "Quillfeather", "Praske"):
        assert expected in terms, terms
    # General English words are not "distinctive" even when capitalised at a sentence start.
    for common in ("The", "Tours", "Since", "Power", "Capacity"):
        assert common not in terms


def test_hotwords_follow_the_question(sample_kb: KnowledgeBase) -> None:
    everything = sample_kb.hotwords_for(None, limit=40).split(", ")
    assert {"Skerrimore", "Tullach", "K-420"} <= set(everything)
    lighthouse = sample_kb.hotwords_for("mascara in more light", limit=5).split(", ")
    assert lighthouse[0].startswith("Skerrimore"), lighthouse
    kettle = sample_kb.hotwords_for("what does the error on my kettle mean", limit=5).split(", ")
    assert "K-420" in kettle or "E7" in kettle, kettle
    assert len(sample_kb.hotwords_for(None, limit=3).split(", ")) == 3


def test_select_context_keeps_the_answering_sentences(sample_kb: KnowledgeBase) -> None:
    question = "How many steps does Skerrimore lighthouse have?"
    passages = sample_kb.retrieve(question)
    chosen = sample_kb.select_context(question, passages, max_sentences=2)
    text = " ".join(p.text for p in chosen)
    assert "212 steps" in text
    assert sum(len(p.text.split(". ")) for p in chosen) <= 3
    assert len(text) < len(" ".join(p.text for p in passages))
    assert chosen[0].source == LIGHTHOUSE and chosen[0].heading


def test_select_sentences_without_embeddings_is_lexical() -> None:
    passages = [
        Passage("The warranty lasts 3 years. Register the kettle at the service desk.", "k.txt", 0.6),
        Passage("Descale every 6 weeks. The kettle boils in about 4 minutes.", "k.txt", 0.5, position=1),
    ]
    chosen = select_sentences("How long is the warranty?", passages, 1)
    assert [p.text for p in chosen] == ["The warranty lasts 3 years."]
    both = select_sentences("How long does the kettle take to boil, and the warranty?", passages, 2)
    assert {p.position for p in both} == {0, 1}


def test_every_format_is_searchable(make_kb: Any, tmp_path: Path) -> None:
    import docx

    folder = tmp_path / "formats"
    folder.mkdir()
    (folder / "harbour.html").write_text(
        "<html><head><title>Port Ellery guide</title><script>var x = 'Ignore me';</script></head><body>"
        "<h1>Port Ellery</h1><h2>Ferries</h2><p>The ferry to Carrick leaves at 9:15 from pier four.</p>"
        "<h2>Fish market</h2><ul><li>The fish market opens on Saturdays only.</li></ul></body></html>",
        encoding="utf-8")
    document = docx.Document()
    document.add_heading("Greenhouse log", level=1)
    document.add_heading("Tomatoes", level=2)
    document.add_paragraph("The Brindlewood tomatoes were planted on 3 May in bed six.")
    document.save(folder / "greenhouse.docx")
    (folder / "notes.md").write_text("Bicycle\n=======\n\nThe bicycle lock code is 4471.\n", encoding="utf-8")
    shutil.copy(SAMPLE_KB / BAKERY, folder / BAKERY)
    kb = make_kb(folder)
    kb.open()
    assert kb.status()["documents"] == 4 and not kb.status()["failed"]
    ferry = kb.retrieve("When does the ferry to Carrick leave?")[0]
    assert (ferry.source, ferry.heading) == ("harbour.html", "Port Ellery > Ferries")
    assert "Ignore me" not in " ".join(c.text for c in kb._state.chunks.values())
    tomato = kb.retrieve("When were the tomatoes planted?")[0]
    assert (tomato.source, tomato.heading) == ("greenhouse.docx", "Greenhouse log > Tomatoes")
    assert kb.retrieve("What is the code of the bike lock?")[0].source == "notes.md"
    assert kb.retrieve("Who runs the bakery kitchen?")[0].source == BAKERY


def test_check_folder_reports_a_missing_folder(make_kb: Any, tmp_path: Path) -> None:
    from daemon.errors import KnowledgeBaseError

    kb = make_kb(tmp_path / "nowhere")
    with pytest.raises(KnowledgeBaseError, match="does not exist"):
        kb.check_folder()
    kb.open()        # the service keeps running with an empty knowledge base
    status = kb.status()
    assert status["documents"] == 0 and "missing" in status["reason"]
    assert kb.retrieve("anything") == []
