"""The training hand-off: the kept rows in the formats, order and files a trainer reads."""
