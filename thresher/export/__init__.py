"""The training hand-off: the kept rows in the order, files and formats a trainer reads.

:mod:`thresher.export.handoff` orders, splits and cuts the rows into files
and has each file written in every format asked for, by the writers of
this package (:mod:`thresher.export.megatron`: a Megatron-LM indexed
dataset; :mod:`thresher.export.mds`: MosaicML Streaming shards;
:mod:`thresher.export.delta`: a Delta Lake table version). Files are
published whole, as :class:`~thresher.io.sink.ParquetSink` publishes
Parquet: a reader never sees a partial file, and a writer that fails
publishes nothing. None of them imports the trainer's library: the formats
are written byte for byte as those libraries write them, and the tests read
them back with the libraries' own readers.
"""
