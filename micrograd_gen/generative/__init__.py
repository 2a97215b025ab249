"""The generative chapter, one module per model family. Import the module you need; nothing heavy
is imported here.

text_sampling   temperature reweighting and sampling of the next token (the book's `sample()`)
char_lstm       the first edition's character-level LSTM: model, training, state-carrying generation
transformer_lm  the second edition's word-level Transformer LM: layers, model, KV-cache generation
text_training   what both text models share: fused loss, training through fit, TextGenerator, checkpoints
deepdream       DeepDream on InceptionV3: octaves, gradient ascent, detail re-injection
style_transfer  neural style transfer on VGG19 (Gatys et al.): losses, SGD and L-BFGS loops
fast_style      fast style transfer (Johnson et al.): a feed-forward network trained per style
vae             the variational autoencoder on MNIST and its latent-space tools
dcgan           the DCGAN on 64x64 faces
denoise         a convolutional denoising autoencoder on MNIST
checkpoint      one-file training checkpoints that resume a run exactly (shared)
"""
