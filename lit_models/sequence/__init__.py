"""Sequence models: the Markov window, RNN, LSTM and GRU on one loop (classification, language modelling,
regression)."""

from lit_models.sequence.base import SequenceModule
from lit_models.sequence.models import GRU, LSTM, RNN, Markov

__all__ = ["GRU", "LSTM", "RNN", "Markov", "SequenceModule"]
