"""The generative chapter, one module per model family. Import the module you need; nothing heavy
is imported here.

text_sampling   temperature reweighting and sampling of the next token (the book's `sample()`)
char_lstm       the first edition's character-level LSTM: model, training, state-carrying generation
transformer_lm  the second edition's word-level Transformer LM: layers, model, KV-cache generation
text_training   training loop, TextGenerator callback and checkpoints shared by both text models
"""
