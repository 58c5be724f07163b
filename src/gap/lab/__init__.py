"""`gap lab`: the whole GAP loop measured end to end on a synthetic world whose truth is known."""
