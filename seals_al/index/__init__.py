"""The kNN structure over U: the faiss index (:mod:`.build`), index directories
(:mod:`.directory`), neighbour sources and the neighbour graph (:mod:`.neighbours`), and recall
against exact search (:mod:`.recall`)."""
