"""Data: MNIST, pictures (loading, a streaming dataset, grids and GIFs), and text corpora with
character and word vectorisation. Pure NumPy and Pillow; nothing here needs the engine."""
from .images import (ImageDataset, image_dataset_from_directory, load_image, resize_bilinear,
                     save_gif, save_image, save_image_grid, smart_resize)
from .mnist import load_mnist, read_idx
from .text import (CharBatches, CharVocabulary, LMBatches, TextFiles, TextVectorization, char_batches,
                   char_windows, check_char_corpus, lm_batches, load_text_corpus, python_stdlib_corpus, text_files_dataset)

__all__ = [
    "load_mnist", "read_idx",
    "load_image", "smart_resize", "resize_bilinear", "ImageDataset", "image_dataset_from_directory",
    "save_image", "save_image_grid", "save_gif",
    "load_text_corpus", "python_stdlib_corpus", "CharVocabulary", "char_windows", "check_char_corpus", "CharBatches",
    "char_batches", "TextVectorization", "TextFiles", "text_files_dataset", "LMBatches", "lm_batches",
]
