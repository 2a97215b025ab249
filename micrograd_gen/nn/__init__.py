"""Keras-style layers and models (micrograd_gen.nn).

base.py           Layer, Model, Sequential, Input; seeds (set_seed) and automatic names
initializers.py   glorot_uniform, orthogonal, zeros, ... with Keras's fan rules
activations.py    activation functions by Keras name
core.py           Dense, Activation, Flatten, Reshape, Dropout, Embedding, LeakyReLU, Concatenate, Add
"""
from . import activations, initializers
from .base import Input, KerasTensor, Layer, Model, Sequential, clear_session, set_seed
from .core import (Activation, Add, Concatenate, Dense, Dropout, Embedding, Flatten, LeakyReLU,
                   Reshape)

__all__ = ["Layer", "Model", "Sequential", "Input", "KerasTensor", "set_seed", "clear_session",
           "Dense", "Activation", "Flatten", "Reshape", "Dropout", "Embedding", "LeakyReLU",
           "Concatenate", "Add", "activations", "initializers"]
