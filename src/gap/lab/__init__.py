"""`gap lab`: the whole GAP loop measured end to end on a synthetic world whose truth is known.

:mod:`gap.lab.world` draws scenes and questions (pure), :mod:`gap.lab.players` plays them through
the real HTTP game, :mod:`gap.lab.model` builds the base model with known blind spots,
:mod:`gap.lab.loop` runs fit, export, train and eval, and :mod:`gap.lab.report` writes the figures.
"""
