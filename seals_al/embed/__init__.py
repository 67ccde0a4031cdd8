"""Embedding items into the store: in one process with a cache (:mod:`.local`), or at scale with
Apache Beam (:mod:`.pipeline`, over :mod:`.transforms` and :mod:`.handlers`). Importing this
package imports neither Beam nor a model."""
