"""Keras-style layers and models (micrograd_gen.nn).

base.py            Layer, Model, Sequential, Input, Variable (a weight with assign()); set_seed and
                   automatic names; training modes
arguments.py       the checks on layer constructor arguments (positive units, rates in [0, 1), ...)
initializers.py    glorot_uniform, orthogonal, zeros, ... with Keras's fan rules
activations.py     activation functions by Keras name ("relu", "softmax", ...)
core.py            Dense, Activation, Flatten, Reshape, Dropout, Embedding, Concatenate, Add;
                   the activation layers ReLU, LeakyReLU, ELU, PReLU, Softmax
convolutional.py   Conv2D, Conv2DTranspose, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
                   UpSampling2D
recurrent.py       LSTM
attention.py       MultiHeadAttention
normalization.py   LayerNormalization, BatchNormalization
training.py        compile / fit / evaluate / predict / train_step for Model; gradients(loss, weights)
"""
from . import activations, initializers
from .attention import MultiHeadAttention
from .base import (Input, KerasTensor, Layer, Model, Sequential, Variable, clear_session,
                   set_seed)
from .convolutional import (AveragePooling2D, Conv2D, Conv2DTranspose, GlobalAveragePooling2D,
                            MaxPooling2D, UpSampling2D)
from .core import (ELU, Activation, Add, Concatenate, Dense, Dropout, Embedding, Flatten, LeakyReLU,
                   PReLU, ReLU, Reshape, Softmax)
from .normalization import BatchNormalization, LayerNormalization
from .recurrent import LSTM
from .training import gradients

__all__ = ["Layer", "Model", "Sequential", "Input", "KerasTensor", "Variable", "set_seed",
           "clear_session", "Dense", "Activation", "Flatten", "Reshape", "Dropout", "Embedding",
           "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
           "Concatenate", "Add", "Conv2D", "Conv2DTranspose", "MaxPooling2D", "AveragePooling2D",
           "GlobalAveragePooling2D", "UpSampling2D", "LSTM", "MultiHeadAttention",
           "LayerNormalization", "BatchNormalization", "activations", "initializers", "gradients"]
