"""The live knowledge base: the user's documents, indexed for retrieval and kept up to date.

``KnowledgeBase`` (see :mod:`daemon.kb.index`) is the one entry point; the other modules are
its parts: loaders (formats), chunking, store (crash-safe persistence), vectors (FAISS),
hybrid (BM25 + sound-alike names + fusion), vocab (hotwords), select (sentence selection) and
watcher (live reindex).
"""

from daemon.kb.index import KnowledgeBase
from daemon.kb.select import select_sentences

__all__ = ["KnowledgeBase", "select_sentences"]
